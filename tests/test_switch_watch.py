"""The watch after each step, on injected time: HTTP status and latency probes,
Prometheus queries against max/min, and the automatic move back to blue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migrator import commands
from migrator.errors import ExitCode, GateRefused
from migrator.switch import Timing, WatchFailed
from tests.support.switch_env import (
    ColourServer,
    FakePrometheus,
    command_section,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)


class FakeTime:
    """A clock that only moves when the code sleeps; `at` runs hooks at given times."""

    def __init__(self) -> None:
        self.now = 0.0
        self.hooks: list[tuple[float, Any]] = []

    def at(self, when: float, hook: Any) -> None:
        self.hooks.append((when, hook))

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for when, hook in list(self.hooks):
            if self.now >= when:
                self.hooks.remove((when, hook))
                hook()

    @property
    def timing(self) -> Timing:
        return Timing(clock=lambda: self.now, sleep=self.sleep)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus(0.001)
    yield server
    server.stop()


@pytest.fixture
def green() -> Iterator[ColourServer]:
    server = ColourServer("green")
    yield server
    server.stop()


def _plan(
    tmp_path: Path, probes: list[dict[str, Any]], steps: list[int] | None = None
) -> tuple[Any, Path]:
    state = tmp_path / "lb"
    watch = {"duration": "10m", "interval": "15s", "probes": probes}
    return switch_plan(command_section(state, steps=steps or [100], watch=watch)), state


def test_a_ten_minute_watch_probes_every_interval(
    fresh_db: str, tmp_path: Path, prometheus: FakePrometheus
) -> None:
    query = 'sum(rate(http_requests_total{code=~"5.."}[1m]))'
    plan, state = _plan(
        tmp_path,
        [{"prometheus": {"url": prometheus.url, "query": query, "max": 0.01}}],
        steps=[25, 100],
    )
    opts = ready_release(fresh_db, plan)
    clock = FakeTime()
    result = commands.switch(plan, opts, timing=clock.timing)
    # 0s, 15s, ... 600s: 41 rounds per step, two steps.
    assert prometheus.queries == [query] * 82
    assert clock.now == pytest.approx(1200.0)
    assert state.read_text() == "100\n"
    assert result.after == {"blue": 0, "green": 100}
    assert phase(fresh_db, plan.release) == "switched"


def test_prometheus_over_its_max_moves_all_traffic_back_and_names_the_probe(
    fresh_db: str, tmp_path: Path, prometheus: FakePrometheus
) -> None:
    plan, state = _plan(
        tmp_path,
        [{"prometheus": {"url": prometheus.url, "query": "error_ratio", "max": 0.01}}],
        steps=[10, 50, 100],
    )
    opts = ready_release(fresh_db, plan)
    clock = FakeTime()
    clock.at(700.0, lambda: setattr(prometheus, "value", 0.25))  # during step 2's watch
    with pytest.raises(WatchFailed) as failed:
        commands.switch(plan, opts, timing=clock.timing)
    error = failed.value
    assert error.exit_code == ExitCode.REFUSED
    assert (error.probe, error.value, error.limit) == (
        "prometheus 'error_ratio'",
        "0.25",
        "<= 0.01",
    )
    assert "watch of step 2/3 (50% green) failed after 105.0s" in str(error)
    assert "prometheus 'error_ratio' gave 0.25, limit <= 0.01" in str(error)
    assert "all traffic moved back to blue" in str(error)
    assert state.read_text() == "0\n"
    moves = [
        (e["details"]["to"]["green"], e["details"]["reason"])
        for e in traffic_events(fresh_db, plan.release)
    ]
    assert moves == [
        (10, "step 1/3"),
        (50, "step 2/3"),
        (0, "watch failed: prometheus 'error_ratio': 0.25 (limit <= 0.01)"),
    ]
    assert phase(fresh_db, plan.release) == "expanded"


def test_prometheus_under_its_min_and_no_data_fail(
    fresh_db: str, tmp_path: Path, prometheus: FakePrometheus
) -> None:
    plan, state = _plan(
        tmp_path,
        [{"prometheus": {"url": prometheus.url, "query": "up", "min": 1}}],
    )
    opts = ready_release(fresh_db, plan)
    prometheus.value = 0.0
    with pytest.raises(WatchFailed, match=r"gave 0, limit >= 1"):
        commands.switch(plan, opts, timing=FakeTime().timing)
    assert state.read_text() == "0\n"
    prometheus.value = None  # an empty vector: the metric is missing
    with pytest.raises(WatchFailed, match=r"gave no data, limit >= 1"):
        commands.switch(plan, opts, timing=FakeTime().timing)


def test_http_status_probe_failure_rolls_back(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    plan, state = _plan(tmp_path, [{"http": {"url": f"{green.url}/healthz"}}])
    opts = ready_release(fresh_db, plan)
    clock = FakeTime()
    clock.at(45.0, lambda: setattr(green, "health_status", 502))
    with pytest.raises(WatchFailed, match=r"failed after 45.0s: http .*/healthz gave status 502"):
        commands.switch(plan, opts, timing=clock.timing)
    assert state.read_text() == "0\n"


def test_http_latency_probe_failure_rolls_back(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    green.delay = 0.25
    plan, state = _plan(
        tmp_path, [{"http": {"url": f"{green.url}/healthz", "max_latency": "50ms"}}]
    )
    opts = ready_release(fresh_db, plan)
    # Real time here: the latency is measured, not simulated.
    with pytest.raises(WatchFailed) as failed:
        commands.switch(plan, opts)
    assert failed.value.limit == "status 200, latency <= 50ms"
    assert failed.value.value.startswith("latency ") and failed.value.value.endswith("ms")
    assert int(failed.value.value[len("latency ") : -2]) >= 250
    assert state.read_text() == "0\n"


def test_a_manual_rollback_during_the_watch_stops_the_switch(fresh_db: str, tmp_path: Path) -> None:
    plan, state = _plan(tmp_path, [], steps=[50, 100])
    opts = ready_release(fresh_db, plan)
    clock = FakeTime()
    # Another operator runs `migrator rollback` while this switch watches step 1.
    clock.at(60.0, lambda: commands.rollback(plan, opts))
    with pytest.raises(GateRefused, match="moved back to blue by someone else"):
        commands.switch(plan, opts, timing=clock.timing)
    assert state.read_text() == "0\n"  # step 2 never ran
    moves = [
        (e["details"]["to"]["green"], e["details"]["reason"])
        for e in traffic_events(fresh_db, plan.release)
    ]
    assert moves == [(50, "step 1/2"), (0, "rollback")]


class Killed(BaseException):
    """Stands for kill -9: nothing in migrator catches it, nothing is cleaned up."""


def _kill() -> None:
    raise Killed


def _watched(url: str, release: str) -> list[int]:
    from migrator.commands.session import STATE
    from migrator.db.connection import connect, make_engine

    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            events = STATE.events(conn, release)
    finally:
        engine.dispose()
    return [e["details"]["green"] for e in events if e["action"] == "switch.watched"]


def _killed_during_the_last_watch(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> tuple[Any, Path, Any]:
    plan, state = _plan(tmp_path, [{"http": {"url": f"{green.url}/healthz"}}], steps=[50, 100])
    opts = ready_release(fresh_db, plan)
    clock = FakeTime()
    clock.at(600.0 + 60.0, _kill)  # a minute into the watch of step 2
    with pytest.raises(Killed):
        commands.switch(plan, opts, timing=clock.timing)
    assert state.read_text() == "100\n"
    assert phase(fresh_db, plan.release) == "switching"
    assert _watched(fresh_db, plan.release) == [50]
    return plan, state, opts


def test_a_switch_killed_during_its_last_watch_watches_again_when_rerun(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    plan, state, opts = _killed_during_the_last_watch(fresh_db, tmp_path, green)
    clock = FakeTime()
    commands.switch(plan, opts, timing=clock.timing)
    assert clock.now >= 600.0  # the whole watch, not the nine minutes left
    assert _watched(fresh_db, plan.release) == [50, 100]
    assert phase(fresh_db, plan.release) == "switched"
    moves = [e["details"]["to"]["green"] for e in traffic_events(fresh_db, plan.release)]
    assert moves == [50, 100]  # no traffic moved by the rerun
    # Watched to the end now: another rerun has nothing to watch.
    again = FakeTime()
    commands.switch(plan, opts, timing=again.timing)
    assert again.now == 0.0
    # A release switched by a migrator that did not record its watches is not watched
    # again either: `switched` is only set once the watch passed.
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DELETE FROM migrator.events WHERE action = 'switch.watched'")
    older = FakeTime()
    commands.switch(plan, opts, timing=older.timing)
    assert older.now == 0.0


def test_a_failed_probe_in_the_resumed_watch_moves_all_traffic_back(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    plan, state, opts = _killed_during_the_last_watch(fresh_db, tmp_path, green)
    clock = FakeTime()
    clock.at(30.0, lambda: setattr(green, "health_status", 502))
    with pytest.raises(WatchFailed, match=r"step 2/2 \(100% green\), resumed failed after"):
        commands.switch(plan, opts, timing=clock.timing)
    assert state.read_text() == "0\n"
    assert phase(fresh_db, plan.release) == "expanded"


def test_a_step_watched_to_the_end_is_not_watched_again(
    fresh_db: str, tmp_path: Path, green: ColourServer
) -> None:
    plan, state = _plan(tmp_path, [{"http": {"url": f"{green.url}/healthz"}}], steps=[50, 100])
    opts = ready_release(fresh_db, plan)
    first = FakeTime()
    commands.switch(plan, opts, step=1, timing=first.timing)
    assert first.now == pytest.approx(600.0, abs=15.0)
    second = FakeTime()
    commands.switch(plan, opts, timing=second.timing)
    assert second.now == pytest.approx(600.0, abs=15.0)  # step 2's watch only
    assert _watched(fresh_db, plan.release) == [50, 100]
    assert state.read_text() == "100\n"
