"""pytest fixtures for a live Cloud 66 emulator (registered as the ``cloud66`` pytest11 plugin).

pytest loads this module in every session of every project that installs the provider, so it imports
nothing at module level beyond pytest itself; the emulator is imported when a fixture is first used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from airflow_provider_c66.testing.emulator import Cloud66Emulator

DEFAULT_STACK = "stack-1"
DEFAULT_CONN_ID = "cloud66_default"


class Cloud66EmulatorFactory(Protocol):
    """Signature of the ``cloud66_emulator_factory`` fixture's value."""

    def __call__(
        self,
        *,
        stacks: Sequence[str] = (DEFAULT_STACK,),
        conn_id: str | None = DEFAULT_CONN_ID,
        **settings: Any,
    ) -> Cloud66Emulator: ...


def connection_json(emulator: Cloud66Emulator) -> str:
    """The ``AIRFLOW_CONN_*`` value that points an Airflow connection at ``emulator``."""
    return json.dumps({"conn_type": "cloud66", "host": emulator.base_url, "password": emulator.token})


@pytest.fixture
def cloud66_emulator_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud66EmulatorFactory]:
    """Start emulators with custom settings; each is stopped when the test ends.

    ``settings`` are :class:`Cloud66Emulator` arguments. Each stack in ``stacks`` is added with the
    default database; ``conn_id`` (None to skip) gets an ``AIRFLOW_CONN_<ID>`` variable for the test.
    """
    from airflow_provider_c66.api import RateBudget
    from airflow_provider_c66.testing.emulator import Cloud66Emulator

    RateBudget.forget_shared()  # a budget spent in an earlier test's emulator is not this one's
    started: list[Cloud66Emulator] = []

    def make(
        *,
        stacks: Sequence[str] = (DEFAULT_STACK,),
        conn_id: str | None = DEFAULT_CONN_ID,
        **settings: Any,
    ) -> Cloud66Emulator:
        emulator = Cloud66Emulator(**settings)
        emulator.start()
        started.append(emulator)
        for uid in stacks:
            emulator.add_stack(uid)
        if conn_id is not None:
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(emulator))
        return emulator

    try:
        yield make
    finally:
        for emulator in reversed(started):
            emulator.stop()


@pytest.fixture
def cloud66_emulator(cloud66_emulator_factory: Cloud66EmulatorFactory) -> Cloud66Emulator:
    """A started emulator with stack ``stack-1``, wired to the ``cloud66_default`` connection."""
    return cloud66_emulator_factory()
