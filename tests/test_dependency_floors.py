"""The lower bounds in pyproject.toml are true: the floor run (make test-floor) installs exactly them."""

from __future__ import annotations

import os
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _project() -> dict[str, object]:
    with PYPROJECT.open("rb") as f:
        return dict(tomllib.load(f)["project"])


def _direct_dependencies() -> list[Requirement]:
    return [Requirement(spec) for spec in _project()["dependencies"]]  # type: ignore[attr-defined]


def _dev_dependencies() -> list[Requirement]:
    return [Requirement(spec) for spec in _project()["optional-dependencies"]["dev"]]  # type: ignore[index]


# Runtime dependencies: the floor run installs each at its lowest allowed version (lowest-direct).
# The dev extra: the floor run installs each at its newest as of its FLOOR_DATE, the bound declared.
DEPENDENCIES = pytest.mark.parametrize(
    "requirement",
    [*_direct_dependencies(), *_dev_dependencies()],
    ids=lambda r: r.name,
)


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


@pytest.mark.skipif(os.environ.get("C66_FLOOR_RUN") != "1", reason="only make test-floor installs the floors")
def test_floor_run_uses_the_lowest_python_allowed() -> None:
    declared = Version(str(_project()["requires-python"]).removeprefix(">="))
    assert sys.version_info[:2] == (declared.major, declared.minor)
