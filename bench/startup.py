"""Benchmark the CLI's start-up: how long a short command takes beside bare Python.

Runs, in turn and in the same run, `python -c pass` and three short commands, each as a
whole process (interpreter start, imports, the work, exit):

- `migrator --help`;
- `migrator plan validate PLAN` (the README's example plan; no database);
- `migrator lint --sql FILE` with one statement (offline, no database).

Prints the median wall and CPU (user + system) seconds of each, and each command's
difference from and ratio to bare Python, beside the goals: --help within 0.25 s of bare
Python, the lint of one file within 0.6 s. The machine's load average is printed too: on
a busy machine the wall times stretch, the CPU times much less.

The package is byte-compiled first (as pip does on install), so no run pays for
compiling migrator's own modules, also with PYTHONDONTWRITEBYTECODE set.

    .venv/bin/python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import migrator

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "plans" / "2026-11-add-phone.yaml"
STATEMENT = "ALTER TABLE users ADD COLUMN phone text;\n"

HELP_GOAL = 0.25  # seconds above bare Python
LINT_GOAL = 0.6  # seconds, the whole command


@dataclass
class Timed:
    """One command's runs."""

    name: str
    argv: list[str]
    ok_codes: tuple[int, ...] = (0,)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self) -> None:
        """Run the command once; record its wall and CPU seconds."""
        start = time.perf_counter()
        proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        errors = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in self.ok_codes:
            sys.exit(f"{self.name} exited {proc.returncode}: {errors.decode(errors='replace')}")
        self.wall.append(wall)
        self.cpu.append(usage.ru_utime + usage.ru_stime)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="counted runs of each command")
    args = parser.parse_args()

    compileall.compile_dir(Path(migrator.__file__).parent, quiet=1)
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        sql = Path(tmp) / "one.sql"
        sql.write_text(STATEMENT, encoding="utf-8")
        bare = Timed("python -c pass", [python, "-c", "pass"])
        commands = [
            Timed("migrator --help", [python, "-m", "migrator", "--help"]),
            Timed(
                "migrator plan validate PLAN",
                [python, "-m", "migrator", "plan", "validate", str(PLAN)],
            ),
            # One finding (exit 1): the statement takes a lock with no lock_timeout.
            Timed(
                "migrator lint --sql FILE",
                [python, "-m", "migrator", "lint", "--sql", str(sql)],
                ok_codes=(0, 1),
            ),
        ]
        everything = [bare, *commands]
        for timed in everything:  # warm-up: the file cache, not counted
            timed.run()
            timed.wall.clear()
            timed.cpu.clear()
        # In turn, so a change of the machine's speed reaches every command alike.
        for _ in range(args.runs):
            for timed in everything:
                timed.run()

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"start-up, {args.runs} runs each in turn, medians; {os.cpu_count()} cores, "
        f"load average {load}; python {sys.version.split()[0]}"
    )
    print(
        f"{'command':<30} {'wall s':>8} {'cpu s':>8} {'wall-bare':>10} {'cpu-bare':>9} {'x bare':>7}"
    )
    print(f"{bare.name:<30} {bare.median_wall:8.3f} {bare.median_cpu:8.3f}")
    for timed in commands:
        print(
            f"{timed.name:<30} {timed.median_wall:8.3f} {timed.median_cpu:8.3f} "
            f"{timed.median_wall - bare.median_wall:+10.3f} "
            f"{timed.median_cpu - bare.median_cpu:+9.3f} "
            f"{timed.median_wall / bare.median_wall:7.1f}"
        )
    helps, _, lint = commands
    over = helps.median_wall - bare.median_wall
    over_cpu = helps.median_cpu - bare.median_cpu
    print(
        f"goal: --help within {HELP_GOAL} s of bare Python: {over:+.3f} s wall "
        f"({_verdict(over <= HELP_GOAL)}), {over_cpu:+.3f} s cpu "
        f"({_verdict(over_cpu <= HELP_GOAL)})"
    )
    print(
        f"goal: lint of one file within {LINT_GOAL} s: {lint.median_wall:.3f} s wall "
        f"({_verdict(lint.median_wall <= LINT_GOAL)}), {lint.median_cpu:.3f} s cpu "
        f"({_verdict(lint.median_cpu <= LINT_GOAL)})"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


if __name__ == "__main__":
    main()
