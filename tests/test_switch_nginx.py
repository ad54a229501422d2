"""nginx backend against a real nginx on loopback, with two small HTTP servers (blue,
green) and load from a separate process: the switch, a watch failure with its automatic
rollback, and a manual rollback lose no request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from migrator import commands
from migrator.errors import ExitCode
from migrator.switch import ALL_BLUE, ALL_GREEN, Split, SwitchFailed, WatchFailed
from migrator.switch.nginx import Nginx, NginxSettings, render
from tests.support.switch_env import (
    NGINX,
    ColourServer,
    LoadGenerator,
    NginxServer,
    SleptTime,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx; .ci/run installs it)"
)


@pytest.fixture
def colours() -> Iterator[tuple[ColourServer, ColourServer]]:
    blue, green = ColourServer("blue"), ColourServer("green")
    yield blue, green
    blue.stop()
    green.stop()


@pytest.fixture
def nginx(colours: tuple[ColourServer, ColourServer]) -> Iterator[NginxServer]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    server = NginxServer([colours[0].address])
    yield server
    server.stop()


def _section(
    nginx: NginxServer, colours: tuple[ColourServer, ColourServer], **extra: Any
) -> dict[str, Any]:
    blue, green = colours
    return {
        "nginx": nginx.backend_settings([blue.address], [green.address]),
        "smoke": [{"http": {"url": f"{green.url}/healthz", "timeout": "1s", "retries": 1}}],
        "watch": {
            "duration": "1s",
            "interval": "200ms",
            "probes": [{"http": {"url": f"{nginx.url}/", "expect_status": 200}}],
        },
        **extra,
    }


def _answers(url: str, n: int = 40) -> dict[str, int]:
    """Which colour answers n fresh connections (the zero-loss count is the load's job;
    a connection an old worker drops right after a reload is retried, as clients do)."""
    seen: dict[str, int] = {}
    for _ in range(n):
        try:
            body = httpx.get(url).text
        except httpx.RemoteProtocolError:
            body = httpx.get(url).text
        seen[body] = seen.get(body, 0) + 1
    return seen


def test_render_weights_give_each_pool_its_share() -> None:
    settings = NginxSettings(
        upstream_file="/x", upstream="api", blue=["b1:1", "b2:1"], green=["g1:1"]
    )
    text = render(settings, Split(25))
    # 2 blue servers share 75%, 1 green server has 25%: per server 3:3:2 -> 75/25 by pool.
    assert "server b1:1 weight=3;" in text and "server b2:1 weight=3;" in text
    assert "server g1:1 weight=2;" in text
    assert "g1:1" not in render(settings, ALL_BLUE) and "b1:1" not in render(settings, ALL_GREEN)


@needs_nginx
def test_switch_steps_watch_and_manual_rollback_lose_no_request(
    fresh_db: str, nginx: NginxServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    plan = switch_plan(_section(nginx, colours, steps=[50, 100]))
    opts = ready_release(fresh_db, plan)
    assert _answers(nginx.url) == {"blue": 40}

    load = LoadGenerator(nginx.url, rate=300)
    result = commands.switch(plan, opts)
    on_green = _answers(nginx.url)
    back = commands.rollback(plan, opts)
    report = load.stop()

    assert result.after == {"blue": 0, "green": 100}
    assert [m["to"]["green"] for m in result.moves] == [50, 100]
    assert on_green == {"green": 40}
    assert back.ran and "100% green -> 0% green" in back.ran[0]
    assert _answers(nginx.url) == {"blue": 40}
    assert report.failed == 0, report.errors
    assert report.colours.get("blue", 0) > 0 and report.colours.get("green", 0) > 0
    # The schema stays after a traffic rollback: the old version works with it.
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    assert [(e["details"]["from"]["green"], e["details"]["to"]["green"]) for e in events] == [
        (0, 50),
        (50, 100),
        (100, 0),
    ]
    assert all(e["actor"] == "tester@test" and e["at"] is not None for e in events)
    assert all(e["details"]["backend"].startswith("nginx upstream api") for e in events)


@needs_nginx
def test_failed_watch_moves_traffic_back_to_blue_under_load(
    fresh_db: str, nginx: NginxServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    blue, green = colours
    section = _section(nginx, colours, steps=[100])
    # The watch probes green's health check, which goes bad while its pages still work:
    # every request lost here would be lost by the switch itself.
    section["watch"]["probes"] = [{"http": {"url": f"{green.url}/healthz"}}]
    plan = switch_plan(section)
    opts = ready_release(fresh_db, plan)

    load = LoadGenerator(nginx.url, rate=300)

    # Green's health goes bad during the watch, once green has served pages.
    time = SleptTime()

    def break_green() -> None:
        if green.pages > 0:
            green.health_status = 503

    time.after_sleep = break_green
    with pytest.raises(WatchFailed) as failed:
        commands.switch(plan, opts, timing=time.timing)
    report = load.stop()

    assert failed.value.exit_code == ExitCode.REFUSED
    message = str(failed.value)
    assert f"http {green.url}/healthz" in message and "status 503" in message
    assert "limit status 200" in message and "moved back to blue" in message
    assert _answers(nginx.url) == {"blue": 40}
    assert report.failed == 0, report.errors
    assert report.colours.get("green", 0) > 0
    assert phase(fresh_db, plan.release) == "expanded"
    reasons = [e["details"]["reason"] for e in traffic_events(fresh_db, plan.release)]
    assert reasons[0] == "step 1/1" and reasons[1].startswith("watch failed: http ")


@needs_nginx
def test_config_nginx_refuses_is_restored_and_nothing_moves(
    nginx: NginxServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    blue, _ = colours
    settings = NginxSettings.model_validate(
        nginx.backend_settings([blue.address], ["127.0.0.1:notaport"])
    )
    backend = Nginx(settings)
    before = Path(settings.upstream_file).read_text()
    backend.preflight()
    with pytest.raises(SwitchFailed, match="nginx config test failed.*invalid port"):
        backend.set_split(ALL_GREEN)
    assert Path(settings.upstream_file).read_text() == before
    assert backend.current() == ALL_BLUE
    assert _answers(nginx.url, 10) == {"blue": 10}
    # No temp file is left beside the upstream file.
    assert sorted(p.name for p in Path(settings.upstream_file).parent.glob(".upstream*")) == []


@needs_nginx
def test_preflight_refuses_an_upstream_file_it_does_not_recognise(
    nginx: NginxServer, colours: tuple[ColourServer, ColourServer]
) -> None:
    blue, green = colours
    nginx.upstream_file.write_text(
        f"upstream api {{ server {blue.address}; server 10.0.0.9:80; }}\n"
    )
    backend = Nginx(
        NginxSettings.model_validate(nginx.backend_settings([blue.address], [green.address]))
    )
    with pytest.raises(Exception, match="lists neither exactly the blue servers"):
        backend.preflight()
