"""HAProxy: server weights through the runtime API (the admin socket), no reload.

Every server of blue and green sits in one HAProxy backend. A split is a set of
`set weight` commands; the side at 0% also gets `set server ... state drain` (back to
`ready` when it takes traffic again). The split in force is always read back from the
live weights (`show servers state`), never from a file: a runtime change is lost when
HAProxy reloads, and migrator then sees, and says, that traffic is back on blue.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.observer import NULL_OBSERVER, Observer
from migrator.strict import Strict
from migrator.switch.base import BackendKind, Split, SwitchFailed

_NAME = r"^[A-Za-z0-9._:-]+$"  # what HAProxy accepts; no space or ';' to split a command
MAX_WEIGHT = 256  # HAProxy's limit for an absolute weight

# srv_admin_state bits (management guide, "show servers state"). CMAINT (0x04) only
# records that the config said `disabled`; it stays set after `state ready`.
_MAINT = 0x01 | 0x02 | 0x20  # forced, inherited from a tracked server, DNS resolution
_DRAIN = 0x08 | 0x10  # forced, inherited
_OP_STATES = {0: "DOWN", 1: "UP (starting)", 2: "UP", 3: "NOLB (stopping)"}


class HAProxySettings(Strict):
    """Switch by setting server weights through HAProxy's runtime API (no reload)."""

    socket: str = Field(
        description="HAProxy's runtime API (a `stats socket ... level admin`): a unix socket "
        "path, or host:port"
    )
    backend: str = Field(pattern=_NAME, description="the HAProxy backend holding both sides")
    blue: list[str] = Field(min_length=1, description="blue's server names in the backend")
    green: list[str] = Field(min_length=1, description="green's server names in the backend")
    timeout: Duration = Field(default=5.0, description="for each runtime API command")

    @field_validator("blue", "green")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r} is not an HAProxy server name")
        if len(set(names)) != len(names):
            raise ValueError("a server is named twice")
        return names

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str) -> str:
        if "/" not in value and not re.match(r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$", value):
            raise ValueError(f"{value!r} is neither a unix socket path nor host:port")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> HAProxySettings:
        both = sorted(set(self.blue) & set(self.green))
        if both:
            raise ValueError(f"server(s) {', '.join(both)} are both blue and green")
        return self


@dataclass(frozen=True)
class Server:
    """One line of `show servers state`."""

    name: str
    op_state: int
    admin_state: int
    weight: int  # srv_uweight: the live weight
    initial_weight: int  # srv_iweight: the config's

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & _MAINT)

    @property
    def drained(self) -> bool:
        return bool(self.admin_state & _DRAIN)

    @property
    def up(self) -> bool:
        return self.op_state in (1, 2)

    @property
    def share(self) -> int:
        """The weight it takes traffic with: none while drained or in MAINT. A server
        that is DOWN keeps its share; health is the watch's business, not the split's."""
        return 0 if self.maint or self.drained else self.weight


def weights(split: Split, blue: list[Server], green: list[Server]) -> dict[str, int]:
    """Each server's weight for a split. A side alone gets its servers' config weights
    (1 each where one of them is 0, as green's usually are); a shared split gives each
    side its percent, within a side in proportion to those weights, scaled so the
    largest is 256 (HAProxy's limit) for the finest split. A side with a share keeps
    at least weight 1 per server, so a tiny share may come out a little larger."""

    def base(side: list[Server]) -> list[int]:
        if all(s.initial_weight > 0 for s in side):
            return [s.initial_weight for s in side]
        return [1] * len(side)

    if split.green in (0, 100):
        live, idle = (blue, green) if split.green == 0 else (green, blue)
        out = dict(zip((s.name for s in live), base(live), strict=True))
        out.update({s.name: 0 for s in idle})
        return out
    raw: dict[str, float] = {}
    for side, percent in ((blue, split.blue), (green, split.green)):
        b = base(side)
        raw.update({s.name: percent * w / sum(b) for s, w in zip(side, b, strict=True)})
    scale = MAX_WEIGHT / max(raw.values())
    return {name: max(1, min(MAX_WEIGHT, round(r * scale))) for name, r in raw.items()}


def split_of(blue: list[Server], green: list[Server]) -> Split | None:
    """The split the live weights give; None when neither side takes traffic. Any
    share at all is at least 1%, so 0% and 100% mean a side has none."""
    b = sum(s.share for s in blue)
    g = sum(s.share for s in green)
    if b + g == 0:
        return None
    percent = round(100 * g / (b + g))
    if g and b:
        percent = min(max(percent, 1), 99)
    return Split(percent)


class _Refused(Exception):
    """HAProxy answered a command with an error."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"`{command}`: {answer}")
        self.command = command
        self.answer = answer


class HAProxy:
    """The haproxy backend."""

    name = "haproxy"

    def __init__(self, settings: HAProxySettings, *, observer: Observer = NULL_OBSERVER) -> None:
        self.settings = settings
        self.observer = observer

    def describe(self) -> str:
        """What this backend drives."""
        return f"haproxy backend {self.settings.backend} via {self.settings.socket}"

    # -- the runtime API ----------------------------------------------------------------

    def _address(self) -> tuple[int, Any]:
        where = self.settings.socket
        if "/" in where:
            return socket.AF_UNIX, where
        host, port = where.rsplit(":", 1)
        if host.startswith("["):
            return socket.AF_INET6, (host[1:-1], int(port))
        return socket.AF_INET, (host, int(port))

    def send(self, command: str) -> str:
        """One command on its own connection (non-interactive mode: HAProxy answers and
        closes), so an answer is never mistaken for the next command's."""
        family, address = self._address()
        try:
            with socket.socket(family, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.settings.timeout)
                conn.connect(address)
                conn.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SwitchFailed(
                f"haproxy: the runtime API at {self.settings.socket} does not answer "
                f"({reason}); it is haproxy's `stats socket {self.settings.socket} level admin`"
            ) from exc
        return b"".join(chunks).decode(errors="replace")

    def _set(self, command: str) -> None:
        answer = " ".join(self.send(command).split())
        if answer:  # a `set` that worked answers nothing
            raise _Refused(command, answer)

    def servers(self) -> dict[str, Server]:
        """The backend's servers by name, from `show servers state`."""
        b = self.settings.backend
        answer = self.send(f"show servers state {b}")
        lines = answer.splitlines()
        if not lines or lines[0].strip() != "1":
            words = " ".join(answer.split())
            if "find backend" in words:
                raise GateRefused(
                    f"haproxy: no backend {b} (backends: {self._backends()})",
                    gate="backend-ready",
                )
            raise SwitchFailed(f"haproxy: `show servers state {b}` answered {words!r}")
        columns = lines[1].lstrip("#").split() if len(lines) > 1 else []
        found: dict[str, Server] = {}
        for line in lines[2:]:
            if not line.strip() or line.startswith("#"):
                continue
            row = dict(zip(columns, line.split(), strict=False))
            try:
                server = Server(
                    row["srv_name"],
                    int(row["srv_op_state"]),
                    int(row["srv_admin_state"]),
                    int(row["srv_uweight"]),
                    int(row["srv_iweight"]),
                )
            except (KeyError, ValueError) as exc:
                raise SwitchFailed(f"haproxy: cannot read `show servers state`: {line}") from exc
            found[server.name] = server
        return found

    def _backends(self) -> str:
        names = [n for n in self.send("show backend").splitlines()[1:] if n.strip()]
        return ", ".join(names) or "none"

    def _sides(self, found: dict[str, Server]) -> tuple[list[Server], list[Server]]:
        s = self.settings
        missing = [n for n in s.blue + s.green if n not in found]
        if missing:
            raise GateRefused(
                f"haproxy: backend {s.backend} has no server {', '.join(missing)} "
                f"(its servers: {', '.join(found) or 'none'})",
                gate="backend-ready",
            )
        return [found[n] for n in s.blue], [found[n] for n in s.green]

    # -- the four questions -------------------------------------------------------------

    def preflight(self) -> None:
        """The socket answers at level admin; the backend and every named server exist;
        none is in MAINT; green's are UP."""
        s = self.settings
        level = " ".join(self.send("show cli level").split())
        if level in ("operator", "user"):
            raise GateRefused(
                f"haproxy: the runtime API at {s.socket} is at level {level}; `set weight` "
                f"needs level admin (`stats socket {s.socket} level admin`)",
                gate="backend-ready",
            )
        blue, green = self._sides(self.servers())
        for server in blue + green:
            if server.maint:
                colour = "blue" if server.name in s.blue else "green"
                raise GateRefused(
                    f"haproxy: {colour} server {s.backend}/{server.name} is in MAINT; bring "
                    f"it back (`set server {s.backend}/{server.name} state ready`) or leave it "
                    "out of the plan",
                    gate="backend-ready",
                )
        for server in green:
            if not server.up:
                state = _OP_STATES.get(server.op_state, str(server.op_state))
                raise GateRefused(
                    f"haproxy: green server {s.backend}/{server.name} is {state}, not UP "
                    "(see its health check)",
                    gate="backend-ready",
                )

    def current(self) -> Split | None:
        """From the live weights (drained and MAINT servers take none)."""
        return split_of(*self._sides(self.servers()))

    def set_split(self, split: Split) -> Split:
        """Weights of the sides that take traffic first (then `ready`), then the side at
        0% to weight 0 and `drain`: some server always has a weight. A command HAProxy
        refuses puts every server back as it was. Returns the split read back."""
        b = self.settings.backend
        blue, green = self._sides(self.servers())
        target = weights(split, blue, green)
        taking = [(s, target[s.name]) for s in blue + green if target[s.name] > 0]
        idle = [s for s in blue + green if target[s.name] == 0]
        commands: list[str] = []
        for server, weight in taking:
            if server.weight != weight:
                commands.append(f"set weight {b}/{server.name} {weight}")
            if server.drained and not server.maint:  # `ready` would end an operator's MAINT
                commands.append(f"set server {b}/{server.name} state ready")
        for server in idle:
            if server.weight != 0:
                commands.append(f"set weight {b}/{server.name} 0")
            if not server.drained and not server.maint:
                commands.append(f"set server {b}/{server.name} state drain")
        done: list[str] = []
        try:
            for command in commands:
                self._set(command)
                done.append(command)
        except _Refused as exc:
            restored = self._restore(blue + green, done)
            raise SwitchFailed(
                f"haproxy refused {exc} (set {len(done)} of {len(commands)} changes; "
                + ("put back as they were)" if restored else "putting them back failed too)")
                + _hint(exc.answer)
            ) from exc
        after = self.current()
        if after is None:
            raise SwitchFailed(f"haproxy: no server of backend {b} has a weight after the move")
        if after != split:
            self.observer.warning(
                f"haproxy: {split} asked, the weights give {after} (HAProxy weights are "
                f"1-{MAX_WEIGHT} per server); recorded as {after}"
            )
        return after

    def _restore(self, before: list[Server], done: list[str]) -> bool:
        """Undo the commands that went through, from the state read before them."""
        b = self.settings.backend
        # Both commands are `set <weight|server> <backend>/<server> ...`.
        touched = {c.split()[2].split("/", 1)[1] for c in done}
        undo: list[str] = []
        for server in sorted(before, key=lambda s: s.share == 0):  # live ones first
            if server.name not in touched:
                continue
            undo.append(f"set weight {b}/{server.name} {server.weight}")
            if not server.maint:
                state = "drain" if server.drained else "ready"
                undo.append(f"set server {b}/{server.name} state {state}")
        try:
            for command in undo:
                self._set(command)
        except (_Refused, SwitchFailed):
            return False
        return True

    def after_watch(self) -> None:
        """Nothing to retire: blue stays drained at weight 0, the rollback target."""


def _hint(answer: str) -> str:
    if "static" in answer.lower():
        return (
            "; weighted steps need a dynamic balance algorithm (roundrobin, leastconn, "
            "first, or hash-type consistent): with static-rr or map-based hashing HAProxy "
            "takes only weight 0 and the config's weight"
        )
    if "permission denied" in answer.lower():
        return "; the socket needs `level admin`"
    return ""


BACKEND = BackendKind(
    "haproxy", HAProxySettings, lambda s, timing, observer: HAProxy(s, observer=observer)
)

__all__ = ["BACKEND", "MAX_WEIGHT", "HAProxy", "HAProxySettings", "Server", "split_of", "weights"]
