"""command backend: shell commands with the split, a status command, timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from migrator.switch import ALL_BLUE, Split, SwitchFailed
from migrator.switch.command import Command, CommandSettings


def _backend(tmp_path: Path, **extra: object) -> tuple[Command, Path]:
    state = tmp_path / "lb-state"
    state.write_text("0\n")
    settings = CommandSettings.model_validate(
        {
            "to_green": f"echo {{percent}} > {state} && echo blue={{blue_percent}} >&2",
            "to_blue": f"echo 0 > {state}",
            "status": f"cat {state}",
            "timeout": "2s",
            **extra,
        }
    )
    return Command(settings), state


def test_to_green_gets_the_percent_and_status_reads_it_back(tmp_path: Path) -> None:
    backend, state = _backend(tmp_path)
    backend.preflight()
    assert backend.current() == ALL_BLUE
    assert backend.set_split(Split(30)) == Split(30)
    assert state.read_text() == "30\n"
    assert backend.current() == Split(30)
    backend.set_split(ALL_BLUE)
    assert backend.current() == ALL_BLUE


def test_status_may_answer_blue_or_green(tmp_path: Path) -> None:
    backend, _ = _backend(tmp_path, status="echo green")
    assert backend.current() == Split(100)


def test_a_status_that_answers_nonsense_is_a_failure(tmp_path: Path) -> None:
    backend, _ = _backend(tmp_path, status="echo maybe")
    with pytest.raises(SwitchFailed, match="printed 'maybe'; expected the percent"):
        backend.preflight()


def test_without_a_status_command_the_backend_cannot_tell(tmp_path: Path) -> None:
    backend, _ = _backend(tmp_path, status=None)
    assert backend.current() is None


def test_a_failing_command_names_itself_and_its_output(tmp_path: Path) -> None:
    backend, _ = _backend(tmp_path, to_green="echo 'lb says no' >&2; exit 7")
    with pytest.raises(SwitchFailed, match="to_green .* failed with exit 7: lb says no"):
        backend.set_split(Split(100))


def test_a_hanging_command_is_killed_with_its_children_at_the_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    backend, _ = _backend(
        tmp_path, to_green=f"(sleep 1.5; touch {marker}) & sleep 30", timeout="300ms"
    )
    started = time.monotonic()
    with pytest.raises(SwitchFailed, match="did not finish in 0.3s and was killed"):
        backend.set_split(Split(100))
    assert time.monotonic() - started < 5
    time.sleep(1.8)
    assert not marker.exists()  # the whole process group went
