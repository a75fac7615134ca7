"""The report's building blocks: the page's style and sorting script, escaped sortable tables and
embedded figures."""

from __future__ import annotations

import base64
import html
from typing import Any

from synscale.report import figures as F

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{margin-top:1.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" ▲"}th.sorted-desc::after{content:" ▼"}
td.l,th.l{text-align:left}img{max-width:100%}.muted{color:#777;font-size:.9em}
.verdict.ok{color:#0a6b2b;font-weight:600}.verdict.bad{color:#a31515;font-weight:600}.verdict.na{color:#777}
details.samples{margin:.3em 0}details.samples summary{cursor:pointer}img.samples{width:560px;max-width:100%}
figure{margin:1em 0}figcaption{font-size:.9em;color:#444}.missing{color:#8a5a00;background:#fff8e6;padding:.4em .7em;border-left:3px solid #e0a800}
nav a{margin-right:.9em}.summary li{margin:.25em 0}.cat-scaling{color:#c62828}.cat-easy{color:#1565c0}.cat-poor{color:#2e7d32}
.scroll{max-height:28em;overflow:auto}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('sorted-asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
      th.classList.add(asc?'sorted-asc':'sorted-desc');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');
        var nx=parseFloat(x),ny=parseFloat(y),r;
        if(!isNaN(nx)&&!isNaN(ny)){r=nx-ny}else{r=String(x).localeCompare(String(y))}
        return asc?r:-r});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""

esc = html.escape


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def table(df: Any, formats: dict[str, str] | None = None, left: tuple[str, ...] = (), table_id: str = "") -> str:
    """A sortable HTML table; every header and cell is escaped."""
    formats = formats or {}
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(str(c))}</th>' for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row, strict=True):
            missing = is_missing(v)
            text = "–" if missing else formats[c].format(v) if c in formats else str(v)
            key = "" if missing else (repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else str(v))
            cells.append(f'<td class="{"l" if c in left else ""}" data-v="{esc(key)}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    tid = f' id="{esc(table_id)}"' if table_id else ""
    return f'<table class="sortable"{tid}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def figure_html(fig: F.Figure) -> str:
    if fig.missing or fig.png is None:
        return (f'<p class="missing" id="missing-fig-{esc(fig.key)}">Figure {esc(fig.key)} ({esc(fig.title)}) is left out: '
                f"{esc(fig.missing)}</p>")
    data = base64.b64encode(fig.png.read_bytes()).decode()
    svg = fig.png.with_suffix(".svg").name
    return (f'<figure id="fig-{esc(fig.key)}"><img alt="Figure {esc(fig.key)}: {esc(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>Figure {esc(fig.key)}.</b> {esc(fig.title)}. {esc(fig.caption)} "
            f'<a href="{esc(svg)}">SVG</a></figcaption></figure>')


def interval(lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    return "–" if is_missing(lo) or is_missing(hi) else f"[{fmt.format(lo)}, {fmt.format(hi)}]"
