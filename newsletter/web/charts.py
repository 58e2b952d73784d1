"""The report's charts as SVG drawn on the server: horizontal bars (one per story, in issue order), a line over
days or issues, and rates beside reference lines (Gmail's 0.1% and 0.3%).

Hand-made rather than a plotting library: three chart shapes of a few dozen elements each come to ~130 lines
here, where matplotlib (the usual PyPI choice) brings NumPy (tens of MB installed, hundreds of milliseconds to
import) and writes fixed colours into its SVG, and pygal's SVG loads its tooltip script from a CDN by default.
Ours take their colours from CSS classes, so the same SVG is readable in light and dark mode, and every text in
them is escaped. Each chart names itself for screen readers (role="img", <title>); the numbers are also in a table under
each chart (the templates do that).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

FONT = 14


def _svg(width: int, height: int, title: str, body: list[str], css: str) -> Markup:
    t = escape(title)
    return Markup(
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{t}" xmlns="http://www.w3.org/2000/svg" font-size="{FONT}">'
        f"<title>{t}</title>{''.join(body)}</svg>")


def _short(text: str, limit: int = 52) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def bars(title: str, rows: Sequence[tuple[str, float]], *, unit: str = "", width: int = 480) -> Markup:
    """One horizontal bar per row (label above its bar, value after it)."""
    row_h, top = 42, 6
    height = top + row_h * max(1, len(rows)) + 4
    peak = max((v for _l, v in rows), default=0) or 1
    span = width - 70
    body = []
    for n, (label, value) in enumerate(rows):
        y = top + n * row_h
        w = max(1.0, span * value / peak) if value else 0
        body.append(f'<g class="row"><text class="label" x="0" y="{y + 13}"><title>{escape(label)}</title>'
                    f"{escape(_short(label))}</text>"
                    f'<rect class="bar" x="0" y="{y + 18}" width="{w:.1f}" height="16" rx="2">'
                    f"<title>{escape(label)}: {value:g}{unit}</title></rect>"
                    f'<text class="value" x="{w + 6:.1f}" y="{y + 31}">{value:g}{unit}</text></g>')
    if not rows:
        body.append(f'<text class="label" x="0" y="{top + 20}">Nothing to show yet</text>')
    return _svg(width, height, title, body, "bars")


def lines(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
          unit: str = "", width: int = 480, height: int = 230) -> Markup:
    """Each series as a line over the labels (days, issues), with 0 / half / top gridlines and a legend."""
    left, right, top, bottom = 44, 12, 26, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for _n, values in series for v in values), default=0) or 1
    count = max(1, len(labels) - 1)
    body = []
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                    f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                    f"{_tick(peak * frac)}{unit}</text>")
    for i, label in enumerate(labels):
        x = left + plot_w * i / count
        body.append(f'<text class="axis" x="{x:.1f}" y="{height - 8}" text-anchor="middle">{escape(label)}</text>')
    for k, (name, values) in enumerate(series):
        points = [(left + plot_w * i / count, top + plot_h * (1 - v / peak)) for i, v in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline class="line s{k}" fill="none" points="{path}"/>')
        body += [f'<circle class="dot s{k}" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{escape(name)} '
                 f"{escape(labels[i])}: {values[i]:g}{unit}</title></circle>" for i, (x, y) in enumerate(points)]
        lx = left + k * 120
        body.append(f'<rect class="key s{k}" x="{lx}" y="6" width="14" height="4" rx="1"/>'
                    f'<text class="label" x="{lx + 20}" y="13">{escape(name)}</text>')
    return _svg(width, height, title, body, "lines")


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def rates(title: str, rows: Sequence[tuple[str, float]], marks: Sequence[tuple[str, float]],
          width: int = 480) -> Markup:
    """Rates (0..1) as horizontal bars on one scale, with vertical reference lines (e.g. Gmail's 0.1%, 0.3%).
    The scale ends at 1.5 times the highest line, where the lines can be told apart: a rate beyond it is drawn
    to the end with an arrow, its value written beside."""
    top, row_h = 30, 40
    height = top + row_h * len(rows) + 8
    scale_max = max(0.005, *(m * 1.5 for _l, m in marks))
    span = width - 110

    def x(v: float) -> float:
        return span * min(v, scale_max) / scale_max

    body = []
    for n, (label, value) in enumerate(rows):
        y = top + n * row_h
        over = value > scale_max
        body.append(f'<text class="label" x="0" y="{y + 12}">{escape(label)}</text>'
                    f'<rect class="bar" x="0" y="{y + 17}" width="{max(1.0, x(value)) if value else 0:.1f}" '
                    f'height="14" rx="2"><title>{escape(label)}: {value:.2%}</title></rect>'
                    f'<text class="value" x="{x(value) + 6:.1f}" y="{y + 29}">{"▶ " if over else ""}{value:.2%}'
                    "</text>")
    for label, mark in marks:
        body.append(f'<line class="mark" x1="{x(mark):.1f}" x2="{x(mark):.1f}" y1="16" y2="{height - 4}"/>'
                    f'<text class="axis" x="{x(mark):.1f}" y="12" text-anchor="middle">{escape(label)}</text>')
    return _svg(width, height, title, body, "rates")
