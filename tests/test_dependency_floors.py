"""The lower bounds in pyproject.toml are true: the floor run (make test-floor) installs exactly them."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _direct_dependencies() -> list[Requirement]:
    with PYPROJECT.open("rb") as f:
        return [Requirement(spec) for spec in tomllib.load(f)["project"]["dependencies"]]


DEPENDENCIES = pytest.mark.parametrize("requirement", _direct_dependencies(), ids=lambda r: r.name)


def _floor(requirement: Requirement) -> Version:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(floors) == 1, f"{requirement} should declare exactly one >= lower bound"
    return floors[0]


@DEPENDENCIES
def test_installed_version_is_allowed(requirement: Requirement) -> None:
    _floor(requirement)
    installed = version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), f"{installed} is not {requirement}"


@pytest.mark.skipif(os.environ.get("C66_FLOOR_RUN") != "1", reason="only make test-floor installs the floors")
@DEPENDENCIES
def test_floor_run_installs_the_declared_floor(requirement: Requirement) -> None:
    assert Version(version(requirement.name)) == _floor(requirement), (
        f"the floor run installs {requirement.name} {version(requirement.name)}, but pyproject.toml declares "
        f"{requirement}: raise the bound to what installs (and passes), or make the floor run install it"
    )
