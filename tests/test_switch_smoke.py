"""Smoke tests against green before any traffic moves: retries, timeouts, exit 3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.errors import ExitCode
from migrator.switch import SmokeFailed
from tests.support.switch_env import (
    ColourServer,
    command_section,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)


@pytest.fixture
def green() -> Iterator[ColourServer]:
    server = ColourServer("green")
    yield server
    server.stop()


def _plan(tmp_path: Path, smoke: dict[str, Any]) -> tuple[Any, Path]:
    state = tmp_path / "lb"
    return switch_plan(command_section(state, smoke=[{"http": smoke}])), state


def test_failed_smoke_test_stops_with_exit_3_and_moves_nothing(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    green.health_status = 500
    plan, state = _plan(tmp_path, {"url": f"{green.url}/healthz", "retries": 1})
    opts = ready_release(fresh_db, plan)
    with pytest.raises(SmokeFailed) as failed:
        commands.switch(plan, opts)
    assert failed.value.exit_code == ExitCode.REFUSED
    assert "no traffic moved" in str(failed.value)
    assert f"http {green.url}/healthz gave status 500, expected status 200" in str(failed.value)
    assert green.hits == 2  # one try and one retry
    assert state.read_text() == "0\n"
    assert traffic_events(fresh_db, plan.release) == []
    assert phase(fresh_db, plan.release) == "expanded"


def test_smoke_test_retries_until_green_is_up(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    green.health_failures = 2  # still starting: two 503s, then healthy
    plan, state = _plan(tmp_path, {"url": f"{green.url}/healthz", "retries": 2})
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts)
    assert green.hits == 3
    assert state.read_text() == "100\n"


def test_a_slow_green_fails_its_smoke_test_at_the_timeout(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    green.delay = 0.5
    plan, state = _plan(tmp_path, {"url": f"{green.url}/healthz", "timeout": "100ms"})
    opts = ready_release(fresh_db, plan)
    with pytest.raises(SmokeFailed, match=r"gave no answer within 0.1s"):
        commands.switch(plan, opts)
    assert state.read_text() == "0\n"


def test_smoke_test_checks_the_expected_status_and_sends_the_headers(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    plan, state = _plan(
        tmp_path, {"url": f"{green.url}/healthz", "expect_status": 204, "headers": {"Host": "x"}}
    )
    opts = ready_release(fresh_db, plan)
    with pytest.raises(SmokeFailed, match="gave status 200, expected status 204"):
        commands.switch(plan, opts)
    assert state.read_text() == "0\n"
