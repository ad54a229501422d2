"""The backfill's progress bar: rows done of the estimate, rate, ETA, throttle state.

With ``--json`` every progress report is one JSON event instead (ConsoleObserver's).
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from migrator.cli.common import ConsoleObserver, escape, out


class BackfillObserver(ConsoleObserver):
    """ConsoleObserver with a rich progress bar per backfill step."""

    def __init__(self, *, as_json: bool = False, show_sql: bool = True) -> None:
        super().__init__(as_json=as_json, show_sql=show_sql)
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def _progress_bar(self) -> Progress:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("  [cyan]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[counts]}"),
                TextColumn("[dim]{task.fields[speed]}"),
                TextColumn("[dim]{task.fields[note]}"),
                console=out.console,
                transient=False,
            )
            self._bar.start()
        return self._bar

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        if self.as_json:
            super().progress(task, done, total, **extra)
            return
        bar = self._progress_bar()
        rate = extra.get("rate")
        eta = extra.get("eta")
        speed = f"{rate:,.0f} rows/s" if rate else ""
        if eta is not None:
            speed += f", ETA {_clock(float(eta))}"
        throttle = extra.get("throttle")
        counts = f"{done:,}/{total:,} rows" if total else f"{done:,} rows"
        note = f"{throttle}" if throttle and throttle != "go" else ""
        # The estimate can be passed (rows written meanwhile); keep the bar honest.
        shown_total = max(total or 0, done) or None
        if task not in self._tasks:
            self._tasks[task] = bar.add_task(
                escape(task), total=shown_total, counts=counts, speed=speed, note=note
            )
        bar.update(
            self._tasks[task],
            completed=done,
            total=shown_total,
            counts=counts,
            speed=speed,
            note=note,
        )

    def step_done(self, step: str, description: str, seconds: float) -> None:
        if self.as_json or step not in self._tasks:
            super().step_done(step, description, seconds)
            return
        assert self._bar is not None
        task = self._tasks.pop(step)
        self._bar.update(task, completed=self._bar.tasks[task].total, note="")
        if not self._tasks:
            self._bar.stop()
            self._bar = None
        out.print(f"  [green]✓[/] {escape(step)}: {escape(description)} in {_clock(seconds)}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
