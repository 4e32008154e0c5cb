"""The HTML page around a report: inline style, escaping helpers, tables. No script, no network.

Every value that comes from a run (ids, summaries, commands, log lines, error files, events)
goes through `esc`; the only markup written unescaped is the markup built here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from codex_orchestrator import __version__
from codex_orchestrator.util.clock import iso_utc

STYLE = """
:root{color-scheme:light dark;--fg:#1b1b1b;--bg:#fff;--muted:#666;--line:#ddd;--code:#f5f5f5}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8e8;--bg:#161616;--muted:#aaa;--line:#333;--code:#202020}}
body{font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:2rem auto;max-width:1120px;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .5rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}dl.meta dt{color:var(--muted)}dl.meta dd{margin:0}
pre{background:var(--code);padding:.6rem;overflow:auto;max-height:32rem;white-space:pre-wrap;word-break:break-all;font-size:12px}
.tail{display:flex;flex-direction:column-reverse;overflow:auto;max-height:32rem;background:var(--code)}.tail pre{max-height:none;overflow:visible;margin:0}
td code{white-space:pre-wrap;word-break:break-all;font-size:12px}
.status{font-weight:700;text-transform:uppercase;letter-spacing:.03em}
.s-succeeded{color:#2e7d32}.s-failed,.s-timed-out{color:#c62828}.s-cancelled{color:#6d4c41}.s-skipped,.s-pending{color:#757575}.s-running{color:#1565c0}
.problem{border-left:4px solid #c62828;padding:.3rem .7rem;background:rgba(198,40,40,.08)}
.muted{color:var(--muted)}
svg.timeline{max-width:100%;height:auto}svg text{fill:var(--fg);font:12px system-ui,sans-serif}
svg text.stage{text-anchor:end}svg text.axis{text-anchor:middle;fill:var(--muted)}svg text.note{fill:var(--muted);font-style:italic}
svg line.tick{stroke:var(--line)}svg rect.chip{fill:var(--bg);opacity:.85}
.legend span{margin-right:1rem;white-space:nowrap}.legend svg{vertical-align:middle}
"""


def esc(value: object) -> str:
    """``value`` as HTML text (``None`` shows as an empty string)."""
    return "" if value is None else escape(str(value), quote=True)


def status_span(status: object) -> str:
    """A status word, styled by class and readable without colour."""
    text = esc(status)
    return f'<span class="status s-{text.replace(" ", "-")}">{text}</span>'


def link(href: str, text: str) -> str:
    """A relative link; ``href`` is escaped as an attribute."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()
) -> str:
    """A table whose cells are already HTML (escape values with `esc` first)."""
    right = set(numeric)
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in right else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def definition_list(items: Iterable[tuple[str, str]]) -> str:
    """Label/value pairs; values are already HTML."""
    return (
        '<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"
    )


def document(title: str, body: str) -> str:
    """A complete, self-contained HTML page."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}"
        f'<p class="muted">Written {esc(iso_utc())} by codex-orchestrator {esc(__version__)}.</p>'
        "</body></html>\n"
    )
