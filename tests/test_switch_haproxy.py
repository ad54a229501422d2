"""haproxy backend against a real HAProxy on loopback (runtime API, no reload), with two
small HTTP servers (blue, green) and load from a separate process: the weights of each
split, every preflight refusal, a refused command put back, a reload losing the runtime
change; and through `migrator switch`: the stepped switch with its watches, a watch
failure with its automatic rollback and a manual rollback, none losing a request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.errors import ExitCode, GateRefused
from migrator.plan.loader import parse_plan
from migrator.switch import ALL_BLUE, ALL_GREEN, Split, SwitchFailed, WatchFailed, make_backend
from migrator.switch.haproxy import HAProxy, HAProxySettings, Server, split_of, weights
from tests.support.haproxy_env import HAPROXY, NO_HAPROXY, HAProxyServer
from tests.support.switch_env import (
    ColourServer,
    LoadGenerator,
    SleptTime,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)

needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason=NO_HAPROXY)


@pytest.fixture
def colours() -> Iterator[tuple[ColourServer, ColourServer]]:
    blue, green = ColourServer("blue"), ColourServer("green")
    yield blue, green
    blue.stop()
    green.stop()


@pytest.fixture
def haproxy(colours: tuple[ColourServer, ColourServer]) -> Iterator[HAProxyServer]:
    if HAPROXY is None:
        pytest.skip(NO_HAPROXY)
    blue, green = colours
    server = HAProxyServer({"blue1": blue.address}, {"green1": green.address})
    yield server
    server.stop()


def _backend(haproxy: HAProxyServer, **extra: Any) -> HAProxy:
    return HAProxy(HAProxySettings.model_validate(haproxy.backend_settings(**extra)))


def _answers(url: str, n: int = 40) -> dict[str, int]:
    """Which colour answers n requests through the front."""
    import httpx

    seen: dict[str, int] = {}
    with httpx.Client() as client:
        for _ in range(n):
            body = client.get(url).text
            seen[body] = seen.get(body, 0) + 1
    return seen


def _servers(*specs: tuple[str, int]) -> list[Server]:
    """Servers with these config weights, up and ready at that weight."""
    return [Server(name, 2, 0, w, w) for name, w in specs]


# -- the weights (no HAProxy needed) ---------------------------------------------------


def test_weights_give_each_side_its_share_within_haproxy_limits() -> None:
    blue, green = _servers(("b1", 100)), _servers(("g1", 0))
    assert weights(ALL_BLUE, blue, green) == {"b1": 100, "g1": 0}  # the config's weight
    assert weights(ALL_GREEN, blue, green) == {"b1": 0, "g1": 1}  # green's config says 0
    for percent in (1, 5, 25, 50, 75, 99):
        w = weights(Split(percent), blue, green)
        assert max(w.values()) <= 256 and min(w.values()) >= 1
        assert round(100 * w["g1"] / (w["b1"] + w["g1"])) == percent

    # Three blue servers of different sizes, two green: each side its share, within a
    # side in proportion to the config's weights.
    blue = _servers(("b1", 10), ("b2", 10), ("b3", 20))
    green = _servers(("g1", 5), ("g2", 5))
    w = weights(Split(25), blue, green)
    b, g = w["b1"] + w["b2"] + w["b3"], w["g1"] + w["g2"]
    assert round(100 * g / (b + g)) == 25
    assert w["b3"] == 2 * w["b1"] and w["g1"] == w["g2"]
    assert weights(ALL_GREEN, blue, green) == {"b1": 0, "b2": 0, "b3": 0, "g1": 5, "g2": 5}

    # Ten green servers at 1%: each keeps weight 1, so the share comes out larger.
    many = _servers(*[(f"g{i}", 1) for i in range(10)])
    w = weights(Split(1), _servers(("b1", 1)), many)
    assert w["b1"] == 256 and all(w[f"g{i}"] == 1 for i in range(10))


def test_split_of_reads_drained_and_maint_servers_as_taking_nothing() -> None:
    drained = Server("g1", 2, 0x08, 50, 0)
    maint = Server("g2", 0, 0x01, 50, 0)
    assert split_of(_servers(("b1", 50)), [drained, maint]) == ALL_BLUE
    assert split_of([Server("b1", 2, 0x08, 50, 50)], [drained]) is None
    # Any share at all is at least 1% (0% means none): 1 in 1000.
    assert split_of(_servers(("b1", 256), ("b2", 256), ("b3", 256)), _servers(("g1", 1))) == Split(
        1
    )


def test_settings_refuse_names_that_would_split_a_command() -> None:
    base = {"socket": "/run/haproxy.sock", "backend": "api", "blue": ["b1"], "green": ["g1"]}
    HAProxySettings.model_validate(base)
    HAProxySettings.model_validate({**base, "socket": "127.0.0.1:9999"})
    for bad in (
        {"green": ["g1;set weight api/b1 0"]},
        {"backend": "api x"},
        {"green": ["b1"]},
        {"socket": "localhost"},
        {"blue": []},
    ):
        with pytest.raises(ValueError):
            HAProxySettings.model_validate({**base, **bad})


# -- against a real HAProxy --------------------------------------------------------------


@needs_haproxy
def test_weighted_steps_set_live_weights_drain_the_idle_side_and_lose_nothing(
    haproxy: HAProxyServer,
) -> None:
    backend = _backend(haproxy)
    backend.preflight()
    assert backend.current() == ALL_BLUE
    assert haproxy.weights() == {"blue1": (100, "ready"), "green1": (0, "ready")}
    load = LoadGenerator(haproxy.url, rate=200)
    seen = {}
    for percent in (1, 5, 25, 50, 100):
        assert backend.set_split(Split(percent)) == Split(percent)
        assert backend.current() == Split(percent)  # read back from HAProxy, nothing cached
        seen[percent] = haproxy.weights()
    assert _answers(haproxy.url) == {"green": 40}
    assert backend.set_split(ALL_BLUE) == ALL_BLUE
    report = load.stop()

    assert seen[1] == {"blue1": (256, "ready"), "green1": (3, "ready")}
    assert seen[50] == {"blue1": (256, "ready"), "green1": (256, "ready")}
    assert seen[100] == {"blue1": (0, "drain"), "green1": (1, "ready")}
    # Back on blue at the config's weight, green drained.
    assert haproxy.weights() == {"blue1": (100, "ready"), "green1": (0, "drain")}
    assert _answers(haproxy.url) == {"blue": 40}
    assert report.failed == 0, report.errors
    assert report.colours.get("green", 0) > 0 and report.colours.get("blue", 0) > 0


@needs_haproxy
def test_the_tcp_socket_works_like_the_unix_one(haproxy: HAProxyServer) -> None:
    backend = _backend(haproxy, socket=haproxy.tcp_socket)
    backend.preflight()
    backend.set_split(ALL_GREEN)
    assert _answers(haproxy.url, 10) == {"green": 10}
    assert backend.describe() == f"haproxy backend api via {haproxy.tcp_socket}"


@needs_haproxy
def test_preflight_refusals_each_name_their_cause_and_move_nothing(
    haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer], tmp_path: Path
) -> None:
    def refused(backend: HAProxy) -> str:
        before = haproxy.weights()
        with pytest.raises(GateRefused) as exc:
            backend.preflight()
        assert exc.value.exit_code == ExitCode.REFUSED
        assert "\n" not in str(exc.value)
        assert haproxy.weights() == before
        return str(exc.value)

    assert refused(_backend(haproxy, backend="web")) == "haproxy: no backend web (backends: api)"
    assert refused(_backend(haproxy, green=["green1", "green2"])) == (
        "haproxy: backend api has no server green2 (its servers: blue1, green1)"
    )
    haproxy.command("set server api/green1 state maint")
    assert refused(_backend(haproxy)).startswith(
        "haproxy: green server api/green1 is in MAINT; bring it back"
    )
    haproxy.command("set server api/green1 state ready")
    haproxy.command("disable server api/blue1")
    assert "blue server api/blue1 is in MAINT" in refused(_backend(haproxy))
    haproxy.command("enable server api/blue1")

    # Green's health check fails: HAProxy marks it DOWN, the preflight refuses.
    colours[1].stop()
    haproxy.wait_for(lambda: haproxy.state("green1")["srv_op_state"] == "0", "green DOWN")
    assert refused(_backend(haproxy)) == (
        "haproxy: green server api/green1 is DOWN, not UP (see its health check)"
    )

    # A socket nobody listens on is a runtime failure (exit 4), one line.
    with pytest.raises(SwitchFailed) as dead:
        _backend(haproxy, socket=str(tmp_path / "none.sock")).preflight()
    assert dead.value.exit_code == ExitCode.RUNTIME
    assert str(dead.value) == (
        f"haproxy: the runtime API at {tmp_path / 'none.sock'} does not answer (No such file "
        f"or directory); it is haproxy's `stats socket {tmp_path / 'none.sock'} level admin`"
    )


@needs_haproxy
def test_preflight_refuses_a_socket_below_level_admin(
    colours: tuple[ColourServer, ColourServer],
) -> None:
    blue, green = colours
    server = HAProxyServer({"blue1": blue.address}, {"green1": green.address}, tcp_level="operator")
    try:
        backend = _backend(server, socket=server.tcp_socket)
        with pytest.raises(GateRefused, match="is at level operator; `set weight` needs level"):
            backend.preflight()
        assert backend.current() == ALL_BLUE  # reading is allowed at level operator
    finally:
        server.stop()


@needs_haproxy
def test_a_command_haproxy_refuses_puts_every_server_back(
    colours: tuple[ColourServer, ColourServer],
) -> None:
    blue, green = colours
    # static-rr takes only weight 0 and the config's weight: the first weighted step fails.
    server = HAProxyServer({"blue1": blue.address}, {"green1": green.address}, balance="static-rr")
    try:
        backend = _backend(server)
        backend.preflight()
        before = server.weights()
        with pytest.raises(SwitchFailed) as failed:
            backend.set_split(Split(25))
        message = str(failed.value)
        assert "haproxy refused `set weight api/blue1 256`" in message
        assert "static LB algorithm" in message and "put back as they were" in message
        assert "weighted steps need a dynamic balance algorithm" in message
        assert server.weights() == before
        assert backend.current() == ALL_BLUE
        assert _answers(server.url, 10) == {"blue": 10}
    finally:
        server.stop()


@needs_haproxy
def test_a_reload_loses_the_runtime_change_and_current_says_so(
    haproxy: HAProxyServer,
) -> None:
    backend = _backend(haproxy)
    backend.set_split(ALL_GREEN)
    assert backend.current() == ALL_GREEN
    haproxy.reload()  # the config still says blue 100, green 0
    assert backend.current() == ALL_BLUE
    assert _answers(haproxy.url, 10) == {"blue": 10}


# -- through `migrator switch` -----------------------------------------------------------

STEPS = [1, 5, 25, 50, 100]


def _section(
    haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer], **extra: Any
) -> dict[str, Any]:
    _, green = colours
    return {
        "haproxy": haproxy.backend_settings(),
        "steps": STEPS,
        "smoke": [{"http": {"url": f"{green.url}/healthz", "timeout": "1s", "retries": 1}}],
        # Binary-exact times: SleptTime adds them up, and a remainder like 0.3 - 3 * 0.1
        # (5e-17) is lost when added to the clock, so that watch would never end.
        "watch": {
            "duration": "500ms",
            "interval": "125ms",
            "probes": [{"http": {"url": f"{haproxy.url}/", "expect_status": 200}}],
        },
        **extra,
    }


def test_a_plan_names_the_haproxy_backend() -> None:
    plan = parse_plan(
        "release: r\nswitch:\n  haproxy: {socket: /run/haproxy/admin.sock, backend: api,"
        " blue: [b1, b2], green: [g1]}\n  steps: [1, 5, 25, 50, 100]\n",
        "p.yaml",
    )
    assert plan.switch is not None
    backend = make_backend(plan.switch)
    assert backend.describe() == "haproxy backend api via /run/haproxy/admin.sock"


@needs_haproxy
def test_stepped_switch_watches_each_step_and_manual_rollback_lose_no_request(
    fresh_db: str, haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    plan = switch_plan(_section(haproxy, colours))
    opts = ready_release(fresh_db, plan)
    assert _answers(haproxy.url) == {"blue": 40}

    load = LoadGenerator(haproxy.url, rate=300)
    result = commands.switch(plan, opts, timing=SleptTime().timing)
    on_green = _answers(haproxy.url)
    back = commands.rollback(plan, opts)
    report = load.stop()

    assert result.after == {"blue": 0, "green": 100}
    assert [m["to"]["green"] for m in result.moves] == STEPS
    assert on_green == {"green": 40}
    assert back.ran and "100% green -> 0% green" in back.ran[0]
    assert _answers(haproxy.url) == {"blue": 40}
    assert haproxy.weights() == {"blue1": (100, "ready"), "green1": (0, "drain")}
    assert report.failed == 0, report.errors
    assert report.colours.get("blue", 0) > 0 and report.colours.get("green", 0) > 0
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    moves = [(e["details"]["from"]["green"], e["details"]["to"]["green"]) for e in events]
    assert moves == [(0, 1), (1, 5), (5, 25), (25, 50), (50, 100), (100, 0)]
    assert [e["details"]["reason"] for e in events][:2] == ["step 1/5", "step 2/5"]
    assert all(
        e["details"]["backend"] == f"haproxy backend api via {haproxy.socket}" for e in events
    )


@needs_haproxy
def test_failed_watch_moves_traffic_back_to_blue_under_load(
    fresh_db: str, haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    _, green = colours
    section = _section(haproxy, colours)
    # The watch probes green's health check, which goes bad in the watch of 25% while
    # its pages still work (HAProxy checks the port only, so it keeps sending to green):
    # every request lost here would be lost by the switch itself.
    section["watch"]["probes"] = [{"http": {"url": f"{green.url}/healthz"}}]
    plan = switch_plan(section)
    opts = ready_release(fresh_db, plan)
    reader = _backend(haproxy)

    load = LoadGenerator(haproxy.url, rate=300)
    time = SleptTime()

    def break_green() -> None:
        if green.pages > 0 and reader.current() == Split(25):
            green.health_status = 503

    time.after_sleep = break_green
    with pytest.raises(WatchFailed) as failed:
        commands.switch(plan, opts, timing=time.timing)
    report = load.stop()

    assert failed.value.exit_code == ExitCode.REFUSED
    message = str(failed.value)
    assert message.startswith("watch of step 3/5 (25% green) failed")
    assert f"http {green.url}/healthz" in message and "status 503" in message
    assert "moved back to blue" in message
    assert _answers(haproxy.url) == {"blue": 40}
    assert haproxy.weights() == {"blue1": (100, "ready"), "green1": (0, "drain")}
    assert report.failed == 0, report.errors
    assert report.colours.get("green", 0) > 0
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    assert [e["details"]["to"]["green"] for e in events] == [1, 5, 25, 0]
    assert events[-1]["details"]["reason"].startswith("watch failed: http ")


@needs_haproxy
def test_manual_rollback_during_a_watch_stops_the_switch_and_loses_no_request(
    fresh_db: str, haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    plan = switch_plan(_section(haproxy, colours))
    opts = ready_release(fresh_db, plan)
    reader = _backend(haproxy)
    rolled: list[Any] = []

    load = LoadGenerator(haproxy.url, rate=300)
    time = SleptTime()

    def operator_rolls_back() -> None:
        # `migrator rollback` from another terminal while 50% is being watched.
        if not rolled and reader.current() == Split(50):
            rolled.append(commands.rollback(plan, opts))

    time.after_sleep = operator_rolls_back
    with pytest.raises(GateRefused) as stopped:
        commands.switch(plan, opts, timing=time.timing)
    report = load.stop()

    assert "switch stopped during the watch of step 4/5 (50% green)" in str(stopped.value)
    assert "moved back to blue by someone else" in str(stopped.value)
    assert rolled and "50% green -> 0% green" in rolled[0].ran[0]
    assert _answers(haproxy.url) == {"blue": 40}
    assert report.failed == 0, report.errors
    assert phase(fresh_db, plan.release) == "expanded"
    reasons = [e["details"]["reason"] for e in traffic_events(fresh_db, plan.release)]
    assert reasons == ["step 1/5", "step 2/5", "step 3/5", "step 4/5", "rollback"]


@needs_haproxy
def test_switch_refused_by_the_preflight_moves_nothing(
    fresh_db: str, haproxy: HAProxyServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    plan = switch_plan(_section(haproxy, colours))
    opts = ready_release(fresh_db, plan)
    haproxy.command("set server api/green1 state maint")
    with pytest.raises(GateRefused, match="green server api/green1 is in MAINT") as refused:
        commands.switch(plan, opts)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert haproxy.weights() == {"blue1": (100, "ready"), "green1": (0, "maint")}
    assert traffic_events(fresh_db, plan.release) == []


def test_the_deploy_examples_are_a_valid_switch_section_and_haproxy_config() -> None:
    import subprocess

    import yaml

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    section = yaml.safe_load((deploy / "haproxy" / "switch.example.yaml").read_text())
    plan = switch_plan(section["switch"])
    assert plan.switch is not None and plan.switch.backend_name == "haproxy"
    if HAPROXY is not None:
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(deploy / "haproxy" / "haproxy.cfg")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
