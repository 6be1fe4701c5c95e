"""The installed packages meet setup.cfg's floors: an older one fails here, by name, not deep in a
forward pass (transformers 5.23 fails in train/scoring.py with "'BaseModelOutputWithPast' object
has no attribute 'cache'")."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from bench.gpu_check import project_requirements, unmet


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_installed_version_meets_setup_cfgs_floor(requirement):
    assert not unmet([requirement]), f"setup.cfg requires {requirement}, which this python lacks: pip install -e ."


def test_unmet_names_what_is_installed_instead():
    [transformers] = unmet([Requirement("transformers>=99")])
    assert transformers.startswith("transformers>=99: ") and transformers.endswith(" installed")
    assert unmet([Requirement("no-such-package-here")]) == ["no-such-package-here: not installed"]


def test_transformers_floor_is_the_one_scoring_needs():
    floors = {r.name: r for r in project_requirements()}
    assert floors["transformers"].specifier.contains("5.24.0") and not floors["transformers"].specifier.contains("5.23.0")
