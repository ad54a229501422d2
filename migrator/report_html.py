"""The release report as one self-contained HTML page: inline CSS and inline SVG charts,
no script, nothing fetched, so it opens from a file, a CI artifact or an e-mail.

Draws a `commands.report.ReleaseReport`: the phases and steps on one time axis, the
traffic split over time with each watch, the backfill's rows/s and throttle pauses, the
contract's conditions and the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.commands.report import ReleaseReport, Sample, Span, TrafficPoint

WIDTH = 960  # the charts' drawing width, in SVG units (they scale with the page)
LEFT = 190  # room for the labels left of the time axis
RIGHT = 48  # room for the last tick's label

COLOURS = {
    "check": "#7b61ff",
    "expand": "#2f80ed",
    "switch": "#27ae60",
    "backfill": "#f2994a",
    "complete": "#56ccf2",
    "contract": "#eb5757",
    "rollback": "#828282",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
       margin: 24px auto; max-width: 1000px; padding: 0 16px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #e4e7eb; padding-bottom: 4px; }
.meta { color: #52606d; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #e3f8ff;
         color: #035388; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #f0f2f5; vertical-align: top; }
th { color: #52606d; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1e7d32; font-weight: 700; } .bad { color: #c62828; font-weight: 700; }
.empty { color: #7b8794; font-style: italic; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: #3e4c59; }
svg .axis { stroke: #cbd2d9; stroke-width: 1; }
svg .grid { stroke: #f0f2f5; stroke-width: 1; }
"""


class _Axis:
    """Maps times onto x between LEFT and WIDTH - RIGHT."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1e-3)

    def x(self, at: datetime) -> float:
        seconds = (at - self.start).total_seconds()
        return LEFT + (WIDTH - LEFT - RIGHT) * min(max(seconds / self.span, 0.0), 1.0)

    def ticks(self, y_top: float, y_bottom: float) -> str:
        parts = []
        for n in range(6):
            x = LEFT + (WIDTH - LEFT - RIGHT) * n / 5
            label = _duration(self.span * n / 5) if n else "0"
            parts.append(
                f'<line class="grid" x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_bottom}"/>'
                f'<text x="{x:.1f}" y="{y_bottom + 14}" text-anchor="middle">+{label}</text>'
            )
        return "".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "running"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if at else ""


def _svg(height: float, body: str, title: str) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {height:.0f}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _timeline(report: ReleaseReport, axis: _Axis) -> str:
    rows: list[tuple[str, Span, str, float]] = []
    for span in report.phases:
        rows.append((span.name, span, COLOURS.get(span.name, "#9aa5b1"), 16.0))
    for span in report.steps:
        rows.append((span.name, span, COLOURS.get(span.phase, "#9aa5b1"), 9.0))
    row_height = 22
    top = 8
    parts = [axis.ticks(top - 4, top + row_height * len(rows))]
    now = report.generated_at
    for n, (label, span, colour, bar) in enumerate(rows):
        y = top + n * row_height
        x0 = axis.x(span.start)
        x1 = axis.x(span.end or now)
        width = max(x1 - x0, 4.0)  # an instant (check, complete) still shows
        indent = 0 if bar > 10 else 12
        weight = ' font-weight="600"' if bar > 10 else ""
        shown = label if len(label) <= 30 else label[:29] + "…"
        faded = "" if span.end else ' fill-opacity="0.5"'  # still running
        parts.append(
            f'<text x="{4 + indent}" y="{y + 14}"{weight}><title>{escape(label)}</title>'
            f"{escape(shown)}</text>"
            f'<rect x="{x0:.1f}" y="{y + (row_height - bar) / 2:.1f}" width="{width:.1f}" '
            f'height="{bar}" rx="2" fill="{colour}"{faded}>'
            f"<title>{escape(label)}: {_duration(span.seconds)} ({escape(span.status)})</title>"
            f"</rect>"
            f'<text x="{min(x0 + width + 4, WIDTH - RIGHT - 40):.1f}" y="{y + 14}">'
            f"{escape(_duration(span.seconds))}</text>"
        )
    height = top + row_height * len(rows) + 22
    return _svg(height, "".join(parts), "phases and steps over time")


def _traffic(points: Sequence[TrafficPoint], axis: _Axis, end: datetime) -> str:
    top, bottom = 10.0, 150.0

    def y(green: float) -> float:
        return bottom - (bottom - top) * green / 100

    parts = [axis.ticks(top, bottom)]
    for share in (0, 50, 100):
        parts.append(
            f'<line class="axis" x1="{LEFT}" y1="{y(share):.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y(share):.1f}"/><text x="{LEFT - 6}" y="{y(share) + 4:.1f}" '
            f'text-anchor="end">{share}% green</text>'
        )
    moves = [p for p in points if not p.watched]
    path: list[str] = []
    green = 0
    x = float(LEFT)
    path.append(f"M{x:.1f},{y(green):.1f}")
    for move in moves:
        x = axis.x(move.at)
        path.append(f"L{x:.1f},{y(green):.1f}")
        green = move.green
        path.append(f"L{x:.1f},{y(green):.1f}")
    path.append(f"L{axis.x(end):.1f},{y(green):.1f}")
    parts.append(
        f'<path d="{" ".join(path)}" fill="none" stroke="{COLOURS["switch"]}" stroke-width="2.5"/>'
    )
    for move in moves:
        parts.append(
            f'<circle cx="{axis.x(move.at):.1f}" cy="{y(move.green):.1f}" r="4" '
            f'fill="{COLOURS["switch"]}"><title>traffic to {move.green}% green'
            f"{': ' + escape(move.reason) if move.reason else ''}</title></circle>"
        )
    for watch in (p for p in points if p.watched):
        cx, cy = axis.x(watch.at), y(watch.green)
        parts.append(
            f'<path d="M{cx - 5:.1f},{cy - 12:.1f} L{cx + 5:.1f},{cy - 12:.1f} L{cx:.1f},{cy - 4:.1f} Z" '
            f'fill="#1f2933"><title>watched at {watch.green}% green: passed</title></path>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{bottom + 30}">line: green\'s share; ● a traffic change; '
        "▼ a watch passed at that split</text>"
    )
    return _svg(bottom + 38, "".join(parts), "traffic split over time")


def _rates(samples: Sequence[Sample]) -> list[Sample]:
    """Samples with a rate: the one the backfill measured, else the rows filled since the
    sample before over the time between (the first and last samples carry none)."""
    from dataclasses import replace

    filled: list[Sample] = []
    for before, sample in zip([None, *samples[:-1]], samples, strict=True):
        if sample.rate is None and before is not None and before.step == sample.step:
            seconds = (sample.at - before.at).total_seconds()
            if seconds > 0:
                sample = replace(sample, rate=max(sample.rows - before.rows, 0) / seconds)
        filled.append(sample)
    return filled


def _backfill(samples: Sequence[Sample], axis: _Axis) -> str:
    top, bottom = 10.0, 150.0
    samples = _rates(samples)
    rates = [s.rate for s in samples if s.rate]
    peak = max(rates) if rates else 1.0

    def y(rate: float) -> float:
        return bottom - (bottom - top) * rate / peak

    parts = [axis.ticks(top, bottom)]
    # Throttle pauses first, under the line: from each sample not "go" to the next one.
    for sample, following in zip(samples, [*samples[1:], None], strict=True):
        if sample.throttle and sample.throttle != "go":
            x0 = axis.x(sample.at)
            x1 = axis.x(following.at) if following else x0 + 4
            parts.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 3):.1f}" '
                f'height="{bottom - top}" fill="#f2c94c" fill-opacity="0.45">'
                f"<title>throttle: {escape(sample.throttle)}</title></rect>"
            )
    for share in (0.0, 0.5, 1.0):
        parts.append(
            f'<line class="axis" x1="{LEFT}" y1="{y(peak * share):.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y(peak * share):.1f}"/><text x="{LEFT - 6}" y="{y(peak * share) + 4:.1f}" '
            f'text-anchor="end">{peak * share:,.0f} rows/s</text>'
        )
    points = [(axis.x(s.at), y(s.rate)) for s in samples if s.rate]
    if points:
        line = " ".join(
            f"{'M' if n == 0 else 'L'}{px:.1f},{py:.1f}" for n, (px, py) in enumerate(points)
        )
        parts.append(
            f'<path d="{line}" fill="none" stroke="{COLOURS["backfill"]}" stroke-width="2.5"/>'
        )
        for (px, py), sample in zip(points, [s for s in samples if s.rate], strict=True):
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{COLOURS["backfill"]}">'
                f"<title>{sample.rows:,} rows, {sample.rate:,.0f} rows/s</title></circle>"
            )
    parts.append(
        f'<text x="{LEFT}" y="{bottom + 30}">line: rows/s as sampled; shaded: the throttle '
        "paused or slowed the batches</text>"
    )
    return _svg(bottom + 38, "".join(parts), "backfill rows per second over time")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if n in numeric else f"<td>{cell}</td>"
            for n, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(details: dict[str, Any] | None) -> str:
    if not details:
        return ""
    return escape(", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [], {})))


def render_html(report: ReleaseReport) -> str:
    """The page, as one string of HTML."""
    times = [report.created_at, report.generated_at]
    times += [e["at"] for e in report.events]
    times += [s.at for s in report.samples]
    last = max(t for t in times if t is not None)
    first = min(
        [report.created_at, *[p.start for p in report.phases], *[e["at"] for e in report.events]]
    )
    # The axis ends with the last thing that happened (not "now", which may be days later).
    ends = [s.end for s in [*report.phases, *report.steps] if s.end]
    end = max([*ends, *[e["at"] for e in report.events], *[s.at for s in report.samples]] or [last])
    axis = _Axis(first, end)

    sections: list[str] = []
    sections.append(f"<h2>Phases and steps</h2>{_timeline(report, axis)}")
    step_rows = [
        [
            escape(s.phase),
            escape(s.name),
            escape(s.status),
            escape(_time(s.start)),
            escape(_duration(s.seconds)),
        ]
        for s in report.steps
    ]
    sections.append(
        _table(["phase", "step", "status", "started", "took"], step_rows, {4})
        if step_rows
        else '<p class="empty">no step has run yet</p>'
    )
    sections.append("<h2>Traffic</h2>")
    if report.traffic:
        sections.append(_traffic(report.traffic, axis, end))
    else:
        sections.append('<p class="empty">no traffic change recorded</p>')
    sections.append("<h2>Backfill</h2>")
    if report.samples:
        final = report.samples[-1]
        # Its own time axis: a backfill of seconds in a release of minutes would be a dot.
        spans = [p for p in report.phases if p.name == "backfill"]
        start = min([report.samples[0].at, *[p.start for p in spans]])
        stop = max([final.at, *[p.end for p in spans if p.end]])
        sections.append(
            f'<p class="meta">{final.rows:,} rows filled'
            + (f" of ~{final.total:,}" if final.total else "")
            + f", {len(report.samples)} samples; the time axis is the backfill's own</p>"
            + _backfill(report.samples, _Axis(start, stop))
        )
    else:
        sections.append('<p class="empty">no backfill progress recorded</p>')
    sections.append("<h2>Contract conditions</h2>")
    if report.conditions:
        rows = [
            [
                '<span class="ok">✓</span>' if c.ok else '<span class="bad">✗</span>',
                escape(c.name),
                escape(c.detail),
            ]
            for c in report.conditions
        ]
        sections.append(
            f'<p class="meta">{escape(report.conditions_source)}</p>'
            + _table(["", "condition", "detail"], rows, set())
        )
    else:
        sections.append(f'<p class="empty">{escape(report.conditions_source)}</p>')
    sections.append("<h2>Audit log</h2>")
    sections.append(
        _table(
            ["when", "action", "by", "details"],
            [
                [
                    escape(_time(e["at"])),
                    escape(e["action"]),
                    escape(e["actor"]),
                    _details(e["details"]),
                ]
                for e in report.events
            ],
            set(),
        )
    )
    title = f"migrator release {report.release}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(report.release)}</h1>"
        f'<p class="meta"><span class="phase">{escape(report.phase)}</span> '
        f"plan {escape(report.plan_hash[:12])} · started {escape(_time(report.created_at))}"
        + (f" · completed {escape(_time(report.completed_at))}" if report.completed_at else "")
        + f" · report of {escape(_time(report.generated_at))}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
