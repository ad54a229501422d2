"""Every `migrator ...` command the README and docs/ show is real: its verbs exist in the
CLI's command tree and each option it passes is an option of that verb (or of the root).
Arguments (PLAN, file names) are not judged: only the words the CLI itself defines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from migrator.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
PROSE_IN = ("sql", "python", "ini")  # comments in these fences are prose about migrator
INLINE = re.compile(r"`([^`\n]+)`")
# `migrator` followed by a verb or an option, where a command starts: the line's start,
# after a shell prompt, a pipe, `$(`, `&&`, `;`, or an environment assignment.
COMMAND = re.compile(r"(?:^|[\s$(|&;])migrator\s+(-{1,2}[a-z]|[a-z])[^\n#|;&)`]*", re.M)


def _code(text: str) -> list[str]:
    """The code of a page: its fenced blocks, its indented blocks, its inline spans."""
    blocks = [code for info, code in FENCE.findall(text) if info.strip() not in PROSE_IN]
    prose = FENCE.sub("", text)
    # Indented lines are code only where they start with the command (a list item's
    # continuation is indented too).
    indented = [
        line.strip()
        for line in prose.splitlines()
        if line.startswith("    ") and line.lstrip().startswith(("migrator ", "$ migrator "))
    ]
    return [*blocks, "\n".join(indented), *INLINE.findall(prose)]


def commands_in(text: str) -> list[str]:
    """Each `migrator ...` command line shown in a page's code, from `migrator` on."""
    found: list[str] = []
    for code in _code(text):
        # Backslash continuations make one command of several lines.
        code = code.replace("\\\n", " ")
        for match in COMMAND.finditer(code):
            start = match.group(0).index("migrator")
            found.append(match.group(0)[start:].strip())
    return found


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)[1:]
    except ValueError:  # an unbalanced quote cut by the extraction: plain words will do
        return command.split()[1:]


def _options(cmd: Any) -> dict[str, bool]:
    """Each option name of a command, and whether it takes a value. (Typer builds its
    tree on the click it vendors, so the types are asked by name, not isinstance.)"""
    names: dict[str, bool] = {"--help": False}
    for param in cmd.params:
        if param.param_type_name == "option":
            for name in [*param.opts, *param.secondary_opts]:
                names[name] = not param.is_flag and not param.count
    return names


TREE = typer.main.get_command(app)


def problems(command: str) -> list[str]:
    """What in one command line the CLI does not define (empty: all real)."""
    words = _words(command)
    cmd: Any = TREE
    path = ["migrator"]
    found: list[str] = []
    i = 0
    # Verbs: walk down the groups.
    while hasattr(cmd, "commands") and i < len(words):
        word = words[i]
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            options = _options(cmd)
            if name not in options:
                found.append(f"{' '.join(path)} has no option {name}")
            elif options[name] and "=" not in word:
                i += 1
            i += 1
            continue
        sub = cmd.commands.get(word)
        if sub is None:
            found.append(f"{' '.join(path)} has no command {word!r}")
            return found
        cmd, path = sub, [*path, word]
        i += 1
    options = _options(cmd)
    for word in words[i:]:
        if word == "--":  # what follows is another program's command line
            break
        if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", word):
            name = word.split("=", 1)[0]
            if name not in options:
                found.append(f"{' '.join(path)} has no option {name}")
    return found


ALL = [(page, command) for page in PAGES for command in commands_in(page.read_text())]


def test_the_pages_show_commands() -> None:
    """The extraction finds the commands (a broken pattern would pass every page)."""
    pages = {page.name for page, _ in ALL}
    assert {"README.md", "troubleshooting.md", "ci.md", "connecting.md"} <= pages, pages
    assert len(ALL) > 100, len(ALL)


def test_the_checker_catches_what_does_not_exist() -> None:
    assert problems("migrator plan validate plans/ --json") == []
    assert problems("migrator --config m.yaml check PLAN -f github -o x.xml") == []
    assert problems("migrator chekc plan.yaml") == ["migrator has no command 'chekc'"]
    assert problems("migrator plan validat plan.yaml") == ["migrator plan has no command 'validat'"]
    assert problems("migrator status --jsn") == ["migrator status has no option --jsn"]
    assert problems("migrator queries capture --out q/ -- pytest --lf") == []


@pytest.mark.parametrize(("page", "command"), ALL, ids=[f"{p.name}:{c[:60]}" for p, c in ALL])
def test_every_command_shown_is_real(page: Path, command: str) -> None:
    assert problems(command) == [], f"{page.relative_to(ROOT)}: {command}"
