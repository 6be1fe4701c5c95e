"""The installed packages meet setup.cfg's floors: an older one fails here, by name, not deep in a
forward pass (transformers 5.23 fails in train/scoring.py with "'BaseModelOutputWithPast' object
has no attribute 'cache'")."""

from __future__ import annotations

import configparser
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def install_requires() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = config["options"]["install_requires"].splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("requirement", install_requires(), ids=str)
def test_installed_version_meets_setup_cfgs_floor(requirement):
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.fail(f"{requirement.name} is not installed; setup.cfg requires {requirement} (pip install -e .)")
    assert requirement.specifier.contains(Version(installed).base_version, prereleases=True), \
        f"{requirement.name} {installed} is installed, but setup.cfg requires {requirement}: pip install '{requirement}'"


def test_transformers_floor_is_the_one_scoring_needs():
    floors = {r.name: r for r in install_requires()}
    assert floors["transformers"].specifier.contains("5.24.0") and not floors["transformers"].specifier.contains("5.23.0")
