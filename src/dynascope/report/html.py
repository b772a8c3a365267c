"""The self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no external URL anywhere."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from dynascope.report.tables import Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ccc; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8rem; color: #555; }
.note { font-size: 0.85rem; color: #6a4a00; background: #fff8e6; padding: 0.3rem 0.6rem;
        border-left: 3px solid #e0b040; }
.meta { font-size: 0.8rem; color: #666; }
.table-wrap { overflow-x: auto; }
"""


@dataclass
class FigureItem:
    """One embedded figure; ``name`` becomes its HTML id ``fig-NAME`` (characters outside [A-Za-z0-9_-] → _)."""

    name: str
    caption: str
    png: bytes

    def __post_init__(self) -> None:
        self.name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in self.name)


@dataclass
class Section:
    """A titled part of the page: optional intro, tables, figures and notes on what was skipped."""

    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The section's HTML id."""
        return "sec-" + "".join(ch if ch.isalnum() else "-" for ch in self.title.lower())


def _figure_html(fig: FigureItem) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    cap = html.escape(fig.caption)
    return (
        f'<figure id="fig-{html.escape(fig.name)}"><img src="data:image/png;base64,{data}" alt="{cap}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def render_page(title: str, sections: list[Section], meta: list[str]) -> str:
    """The whole page as one string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="meta">{html.escape(m)}</p>' for m in meta),
        "<nav><ul>",
        *(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections),
        "</ul></nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        if s.intro:
            parts.append(f"<p>{html.escape(s.intro)}</p>")
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.notes]
        parts += [f'<div class="table-wrap">{t.to_html()}</div>' for t in s.tables]
        parts += [_figure_html(f) for f in s.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
