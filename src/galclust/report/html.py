"""HTML building blocks of the report: escaped text, tables, embedded figures, the page.

Everything that comes from a run (galaxy ids, file names, column names, error messages) goes
through :func:`html.escape`; nothing is fetched from the network when the page is viewed, so
images are embedded as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232a;
       background: #fbfbfc; line-height: 1.45; }
header { background: #15202b; color: #f5f7fa; padding: 1.2rem 2rem; }
header h1 { margin: 0 0 .3rem 0; font-size: 1.5rem; }
header p { margin: 0; color: #b8c4d0; font-size: .9rem; }
main { max-width: 1150px; margin: 0 auto; padding: 1rem 2rem 3rem 2rem; }
nav { background: #fff; border: 1px solid #e2e6ea; border-radius: 6px; padding: .6rem 1.2rem;
      margin: 1rem 0; }
nav ol { margin: .3rem 0; padding-left: 1.3rem; columns: 2; }
section { background: #fff; border: 1px solid #e2e6ea; border-radius: 6px; padding: .4rem 1.4rem
          1.2rem 1.4rem; margin: 1.2rem 0; }
h2 { border-bottom: 2px solid #e2e6ea; padding-bottom: .3rem; }
h3 { margin-top: 1.4rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .88rem; }
th, td { border-bottom: 1px solid #e8ebee; padding: .25rem .7rem; text-align: right; }
th { background: #f2f4f6; }
td.text, th.text { text-align: left; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e2e6ea; }
figcaption { font-size: .82rem; color: #56606b; max-width: 640px; }
.missing { display: inline-block; border: 2px dashed #d0a040; color: #8a5a00; padding: 1.5rem;
           margin: .5rem 0; font-size: .85rem; background: #fff8e8; }
.note { color: #56606b; font-size: .9rem; }
.absent { color: #8a5a00; }
code { background: #f2f4f6; padding: 0 .25rem; border-radius: 3px; font-size: .85rem; }
"""


def esc(value: object) -> str:
    """Text for HTML: every special character escaped, quotes included."""
    return html.escape(str(value), quote=True)


def _cell(value: object, digits: int) -> tuple[str, bool]:
    """The cell's text and whether it is text (left-aligned) rather than a number."""
    if isinstance(value, bool):
        return ("yes" if value else "no"), True
    if isinstance(value, int):
        return f"{value:,}", False
    if isinstance(value, float):
        if math.isnan(value):
            return "-", False
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits + 1)):
            return f"{value:.{digits}g}", False
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits}g}", False
    return str(value), True


def table(frame: pd.DataFrame, *, digits: int = 4, index: bool = False) -> str:
    """An HTML table of ``frame``, every cell escaped; numbers right-aligned with ``digits``
    significant digits."""
    shown = frame.reset_index() if index else frame
    head = "".join(
        f'<th class="{"text" if not pd.api.types.is_numeric_dtype(shown[c]) else "num"}">'
        f"{esc(c)}</th>"
        for c in shown.columns
    )
    rows = []
    for values in shown.itertuples(index=False):
        cells = []
        for value in values:
            number = value.item() if hasattr(value, "item") else value
            text, is_text = _cell(number, digits)
            cells.append(f'<td class="{"text" if is_text else "num"}">{esc(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def pairs(items: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and values."""
    return table(pd.DataFrame([(k, _cell(v, 4)[0]) for k, v in items], columns=["", "value"]))


@dataclass
class Page:
    """The report being built: sections in order, images embedded, missing images counted."""

    title: str
    subtitle: str = ""
    folder: Path | None = None  # where the page goes: links are made relative to it
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, body)
    missing: list[str] = field(default_factory=list)
    images: int = 0

    def figure(self, path: Path, caption: str = "", *, width: int | None = None) -> str:
        """An embedded PNG with its caption, or a placeholder (counted) when the file is not
        there or cannot be read."""
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if not data.startswith(b"\x89PNG"):
            self.missing.append(str(path))
            return (
                f'<div class="missing" data-missing="{esc(path)}">image missing: '
                f"<code>{esc(path)}</code></div>"
            )
        self.images += 1
        encoded = base64.b64encode(data).decode("ascii")
        size = f' style="max-width: {width}px"' if width else ""
        text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return (
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(caption or path.name)}"'
            f"{size}>{text}</figure>"
        )

    def add(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))

    def render(self, absent: Sequence[str] = ()) -> str:
        toc = "".join(
            f'<li><a href="#{esc(anchor)}">{esc(title)}</a></li>'
            for anchor, title, _ in self.sections
        )
        absent_note = (
            '<p class="absent">Not in these runs: ' + esc(", ".join(absent)) + ".</p>"
            if absent
            else ""
        )
        missing_note = (
            f'<p class="absent">{len(self.missing)} image(s) missing; placeholders shown.</p>'
            if self.missing
            else ""
        )
        body = "".join(
            f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{content}</section>'
            for anchor, title, content in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{esc(self.title)}</h1><p>{esc(self.subtitle)}</p></header><main>"
            f"<nav><strong>Contents</strong><ol>{toc}</ol>{absent_note}{missing_note}</nav>"
            f"{body}</main></body></html>\n"
        )


def para(text: str) -> str:
    """A paragraph of plain (escaped) text."""
    return f"<p>{esc(text)}</p>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def heading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def records(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A frame of ``rows`` with exactly ``columns`` (missing keys as NaN)."""
    frame = pd.DataFrame([{c: r.get(c, math.nan) for c in columns} for r in rows])
    return frame.reindex(columns=list(columns))
