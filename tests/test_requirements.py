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


def test_a_development_build_of_the_floor_version_meets_the_floor(monkeypatch):
    """A source build such as transformers 5.24.0.dev0 has the code of 5.24: it is compared by its release number."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "5.24.0.dev0")
    assert unmet([Requirement("transformers>=5.24")]) == []
    assert unmet([Requirement("transformers>=5.25")]) == ["transformers>=5.25: 5.24.0.dev0 installed"]


def test_a_carried_packages_requirements_are_those_this_python_installs(monkeypatch):
    """What a package needs here: its plain requirements and those whose marker holds for this python, not its
    extras' (nor those for other pythons)."""
    import importlib.metadata

    from bench.gpu_check import declared_requirements

    monkeypatch.setattr(importlib.metadata, "requires", lambda name: [
        "plain>=1", 'tests-only>=2; extra == "test"', 'here>=3; python_version >= "3"',
        'elsewhere>=4; python_version < "3"'])
    assert [str(r) for r in declared_requirements(["some-package"])] == ["plain>=1", 'here>=3; python_version >= "3"']
