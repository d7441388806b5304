"""``index.html``: the report's pictures and metrics on one page that opens offline (no scripts, no CDN; relative links)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from fcnseg.files import atomic_write_text, plural
from fcnseg.metrics import METRIC_LABELS

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0; color: #1d2329; background: #f4f5f7; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 10px; }
.source { color: #56606b; margin: 0 0 18px; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
.card { background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 2px #0002; }
.card .value { font-size: 28px; font-weight: 600; } .card .label { color: #56606b; }
figure { background: #fff; margin: 0 0 14px; padding: 14px; border-radius: 8px; box-shadow: 0 1px 2px #0002; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #56606b; margin-top: 8px; font-size: 14px; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; border-radius: 8px;
        overflow: hidden; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; text-align: right; border-bottom: 1px solid #e8eaed; }
th:first-child, td:first-child { text-align: left; } th { background: #eef0f3; }
td.na { color: #9aa3ad; } table.skipped td { text-align: left; } ul.files { columns: 2; }
nav a { margin-right: 14px; }
"""


@dataclass
class Figure:
    """A picture in the page: ``file`` relative to ``index.html``."""

    heading: str
    file: str
    caption: str = ""
    anchor: str = ""


@dataclass
class Page:
    """What :func:`render_index` lays out.

    ``result`` holds the four metrics, ``per_class_iu``, ``per_class_accuracy`` and ``class_names``
    (the dict of :func:`fcnseg.evaluation.evaluate`); ``pixel_counts`` the ground-truth pixels per
    class; ``files`` (name, description) pairs of everything linked from the page.
    """

    title: str
    source: str
    result: dict
    pixel_counts: list[int]
    figures: list[Figure] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # the result's skipped entries: name, path, kind, message



def _pct(value) -> str:
    return "&ndash;" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _cell(value) -> str:
    defined = value is not None and math.isfinite(value)
    return f'<td{"" if defined else " class=na"}>{_pct(value)}</td>'


def render_index(page: Page) -> str:
    """The HTML text of the page (UTF-8, self-contained but for the images and files it links)."""
    e = html.escape
    result = page.result
    names = result["class_names"]
    total = sum(page.pixel_counts) or 1
    cards = "".join(
        f'<div class=card><div class=value>{_pct(result.get(key))}</div><div class=label>{e(label)} (%)</div></div>'
        for key, label in METRIC_LABELS.items()
    )
    nav = "".join(f'<a href="#{e(f.anchor)}">{e(f.heading)}</a>' for f in page.figures if f.anchor)
    figures = "".join(
        f'<h2 id="{e(f.anchor)}">{e(f.heading)}</h2><figure><a href="{e(f.file)}"><img src="{e(f.file)}" '
        f'alt="{e(f.heading)}"></a>{f"<figcaption>{e(f.caption)}</figcaption>" if f.caption else ""}</figure>'
        for f in page.figures
    )
    rows = "".join(
        f"<tr><td>{e(str(name))}</td>{_cell(iu)}{_cell(acc)}<td>{100 * count / total:.2f}</td><td>{count:,}</td></tr>"
        for name, iu, acc, count in zip(names, result["per_class_iu"], result["per_class_accuracy"], page.pixel_counts)
    )
    files = "".join(f'<li><a href="{e(name)}">{e(name)}</a> &ndash; {e(text)}</li>' for name, text in page.files)
    notes = "".join(f"<p class=source>{e(note)}</p>" for note in page.notes)
    skipped_nav = '<a href="#skipped">skipped</a>' if page.skipped else ""
    skipped = "" if not page.skipped else (
        f'<h2 id="skipped">Skipped ({plural(len(page.skipped), "item")}, not scored)</h2>\n<table class=skipped>\n'
        "<thead><tr><th>item</th><th>file</th><th>why</th></tr></thead>\n<tbody>"
        + "".join(f'<tr><td>{e(str(s.get("name", "")))}</td><td>{e(str(s.get("path", "")))}</td>'
                  f'<td>{e(str(s.get("message", s.get("kind", ""))))}</td></tr>' for s in page.skipped)
        + "</tbody>\n</table>")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(page.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>{e(page.title)}</h1>
<p class=source>{e(page.source)}</p>
{notes}
<div class=cards>{cards}</div>
<nav><p>{nav}<a href="#classes">per-class table</a>{skipped_nav}<a href="#files">files</a></p></nav>
{figures}
<h2 id="classes">Per class</h2>
<table>
<thead><tr><th>class</th><th>IU (%)</th><th>accuracy (%)</th><th>pixels (%)</th><th>pixels</th></tr></thead>
<tbody>{rows}</tbody>
</table>
{skipped}
<h2 id="files">Files</h2>
<ul class=files>{files}</ul>
</main>
</body>
</html>
"""


def linked_files(text: str) -> list[str]:
    """The relative ``src``/``href`` targets in ``text`` (page anchors left out), for checking a page's links."""
    import re

    targets = re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
    return sorted(set(html.unescape(t) for t in targets))


def write_index(page: Page, path: str | Path) -> None:
    """Write :func:`render_index` of ``page`` to ``path`` (normally ``<report>/index.html``), atomically."""
    atomic_write_text(render_index(page), path)
