"""The run report's timeline: an inline SVG with one bar per stage attempt on a time axis.

Stages are rows (config order); attempts of a stage sit side by side on its row, and stages
that ran in parallel overlap in time. A bar's status is told by its fill pattern and by a text
label, never by colour alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from codex_orchestrator.view.attempts import Attempt
from codex_orchestrator.view.rows import format_seconds

LABEL_WIDTH = 170
CHART_WIDTH = 760
ROW_HEIGHT = 26
AXIS_HEIGHT = 28
#: Width of one label character (12 px sans-serif), to size the chip behind a label.
CHAR_WIDTH = 6.8
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
#: Fill pattern and label per shown status; the legend lists them.
PATTERNS = {
    "succeeded": ("p-succeeded", "ok"),
    "failed": ("p-failed", "FAILED"),
    "timed out": ("p-failed", "TIMED OUT"),
    "cancelled": ("p-cancelled", "CANCELLED"),
    "skipped": ("p-skipped", "skipped"),
    "running": ("p-running", "running"),
}
_DEFS = """<defs>
<pattern id="p-succeeded" width="8" height="8" patternUnits="userSpaceOnUse">
<rect width="8" height="8" fill="#2e7d32"/></pattern>
<pattern id="p-failed" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
<rect width="8" height="8" fill="#c62828"/><rect width="3" height="8" fill="#ffcdd2"/></pattern>
<pattern id="p-cancelled" width="8" height="8" patternUnits="userSpaceOnUse">
<rect width="8" height="8" fill="#6d4c41"/><path d="M0 0L8 8M8 0L0 8" stroke="#efebe9" stroke-width="1.5"/></pattern>
<pattern id="p-skipped" width="6" height="6" patternUnits="userSpaceOnUse">
<rect width="6" height="6" fill="#9e9e9e"/><circle cx="3" cy="3" r="1.4" fill="#fafafa"/></pattern>
<pattern id="p-running" width="8" height="6" patternUnits="userSpaceOnUse">
<rect width="8" height="6" fill="#1565c0"/><rect y="4" width="8" height="2" fill="#bbdefb"/></pattern>
<pattern id="p-other" width="8" height="8" patternUnits="userSpaceOnUse">
<rect width="8" height="8" fill="#616161"/><rect width="4" height="4" fill="#e0e0e0"/></pattern>
</defs>"""


def _tick_step(span: float) -> float:
    """A round step giving at most ten ticks over ``span`` seconds."""
    return next((step for step in TICK_STEPS if span / step <= 10), span / 10)


def render_timeline(
    stages: Sequence[tuple[int, str]], attempts: Sequence[Attempt], origin: float, finish: float
) -> str:
    """The SVG for ``stages`` (index, id) and their ``attempts`` between origin and finish."""
    placed = [a for a in attempts if a.start is not None]
    begin = min([origin, *(a.start for a in placed if a.start is not None)])
    end = max([finish, begin, *(a.end or a.start or begin for a in placed)])
    span = max(end - begin, 0.001)
    rows = {index: row for row, (index, _) in enumerate(stages)}
    height = AXIS_HEIGHT + ROW_HEIGHT * max(1, len(stages)) + 8
    width = LABEL_WIDTH + CHART_WIDTH + 110
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="timeline of stage attempts">',
        _DEFS,
    ]

    def x_of(moment: float) -> float:
        return LABEL_WIDTH + (moment - begin) / span * CHART_WIDTH

    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        x = x_of(begin + tick)
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{height - 4}"/>'
            f'<text class="axis" x="{x:.1f}" y="{AXIS_HEIGHT - 10}">{escape(format_seconds(tick))}</text>'
        )
        tick += step
    started = {attempt.stage_index for attempt in placed}
    for row, (index, stage_id) in enumerate(stages):
        y = AXIS_HEIGHT + row * ROW_HEIGHT
        parts.append(
            f'<text class="stage" x="{LABEL_WIDTH - 8}" y="{y + 17}">{escape(stage_id[:28])}</text>'
        )
        if index not in started:
            parts.append(
                f'<text class="note" x="{LABEL_WIDTH + 4}" y="{y + 17}">not started</text>'
            )
    bars = [_bar(attempt, rows.get(attempt.stage_index, 0), x_of) for attempt in placed]
    parts += [svg for svg, _ in bars]
    parts += [label for _, label in bars]  # drawn last, so no bar hides a label
    parts.append("</svg>")
    return "".join(parts)


def _bar(attempt: Attempt, row: int, x_of: Callable[[float], float]) -> tuple[str, str]:
    """The attempt's bar (with its tooltip) and its text label on a backing chip."""
    start = attempt.start or 0.0
    end = attempt.end if attempt.end is not None else start
    x = x_of(start)
    bar_width = max(3.0, x_of(end) - x)
    y = AXIS_HEIGHT + row * ROW_HEIGHT + 4
    pattern, label = PATTERNS.get(attempt.status, ("p-other", attempt.status))
    duration = format_seconds(end - start) if attempt.end is not None else "?"
    text = f"{label} #{attempt.number}" if attempt.number > 1 else label
    title = (
        f"{attempt.stage_id} attempt {attempt.number}: {attempt.status}, {duration}, "
        f"exit code {attempt.exit_code}"
    )
    bar = (
        f'<g class="attempt" data-stage="{escape(attempt.stage_id)}" data-attempt="{attempt.number}" '
        f'data-status="{escape(attempt.status)}"><title>{escape(title)}</title>'
        f'<rect class="bar" x="{x:.1f}" y="{y}" width="{bar_width:.1f}" height="{ROW_HEIGHT - 8}" '
        f'fill="url(#{pattern})" stroke="#212121" stroke-width="0.6"/></g>'
    )
    left = x + bar_width + 3
    chip = (
        f'<rect class="chip" x="{left:.1f}" y="{y + 2}" width="{len(text) * CHAR_WIDTH + 4:.1f}" '
        f'height="{ROW_HEIGHT - 12}" rx="2"/>'
        f'<text class="label" x="{left + 2:.1f}" y="{y + 13}">{escape(text)}</text>'
    )
    return bar, chip
