"""The card's one HTML page: its markup (no network, no libraries).

`render(page)` returns the whole document. Everything it shows is passed in (`Page`, `CaseView`);
this module only lays it out. The stylesheet and the inline JavaScript (sortable tables, the
attention overlay, the case filters, the test hook) are `page_assets`' CSS and JS.
"""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Optional, Sequence

from cnx2rg_jax.card import spans as spans_lib
from cnx2rg_jax.card.page_assets import CSS, JS
from cnx2rg_jax.text import keywords as kw

FONT_STACK = ('"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", '
              'sans-serif')
DISPLAY_PX = 224  # the radiograph's width and height on the page
LEGEND = (("match", "in both reports"), ("partial", "some of its sites in both"),
          ("miss", "reference finding the generated report misses"),
          ("false", "generated finding the reference lacks"), ("found", "positive finding"),
          ("unscored", "positive, no site: not scored"), ("negated", "negated mention"),
          ("uncertain", "uncertain mention"), ("anatomy", "anatomy"))
WHERE = (("mentioned", "mentioned in either report"), ("ref", "positive in the reference"),
         ("gen", "positive in the generated report"), ("missed", "missed (reference only)"),
         ("false", "falsely found (generated only)"))


@dataclasses.dataclass
class CaseView:
  number: int
  case_id: str
  reason: str  # best / worst / random / all / input
  image_png_b64: str
  generated: str  # displayed (cleaned) generated text
  generated_spans: list
  token_spans: list  # [(start, end)] per generated token
  maps: list  # per generated token: flat [h * w] attention weights
  visual_share: list  # per generated token: attention share on the visual patches
  grid: tuple  # (h, w); a study of V views: (h, V * w), the views' maps side by side
  reference: Optional[str] = None
  reference_spans: list = dataclasses.field(default_factory=list)
  score: Optional[dict] = None  # {"tp", "fp", "fn", "f1"}
  filters: dict = dataclasses.field(default_factory=dict)  # {"ref": [keys], ...}
  views: int = 1  # images side by side in image_png_b64 (and in each map)


@dataclasses.dataclass
class Page:
  title: str
  facts: list  # (label, value) lines of the header
  cases: list  # CaseView
  results: Optional[dict] = None  # {method: metrics}, the model's first
  metrics: Optional[dict] = None  # the metrics JSON as written
  table_metrics: Sequence[str] = ()
  curves_svg: str = ""
  per_keyword: list = dataclasses.field(default_factory=list)  # rows, see _keyword_table
  baseline_names: Sequence[str] = ()
  confusion: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)


def _e(x) -> str:
  return html.escape(str(x), quote=True)


def fmt(value) -> str:
  """How the card prints a metric value."""
  if value is None:
    return "n/a"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return f"{value:.4f}"
  return str(value)


def _json_script(element_id: str, obj) -> str:
  text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
  return f'<script type="application/json" id="{_e(element_id)}">{text}</script>'


def keyword_label(key: str) -> str:
  try:
    k = kw.keyword(key)
  except (KeyError, ValueError):
    return key
  return f"{k.name} {k.terms[0]}"


def pair_label(pair) -> str:
  if not pair or not pair[0]:
    return "—"
  return f"{keyword_label(pair[0])} · {keyword_label(pair[1])}"


def _metric_table(page: Page) -> str:
  head = "".join(f"<th>{_e(k)}</th>" for k in page.table_metrics)
  rows = []
  for method, m in (page.results or {}).items():
    cells = "".join(f'<td data-method="{_e(method)}" data-metric="{_e(k)}" data-v="'
                    f'{"" if m.get(k) is None else m.get(k)}">{_e(fmt(m.get(k)))}</td>'
                    for k in page.table_metrics)
    rows.append(f"<tr><td>{_e(method)}</td>{cells}</tr>")
  return (f'<table class="sortable metrics"><thead><tr><th>method</th>{head}</tr></thead>'
          f"<tbody>{''.join(rows)}</tbody></table>")


def _all_figures(metrics: dict) -> str:
  rows = "".join(f'<tr data-metric-key="{_e(k)}"><td>{_e(k)}</td><td>{_e(fmt(v))}</td></tr>'
                 for k, v in metrics.items() if not isinstance(v, (dict, list)))
  return (f'<table class="sortable figures"><thead><tr><th>key</th><th>value</th></tr></thead>'
          f"<tbody>{rows}</tbody></table>")


def _keyword_table(page: Page) -> str:
  base = "".join(f"<th>F1 {_e(n)}</th>" for n in page.baseline_names)
  rows = []
  for r in page.per_keyword:
    cells = [f'<td data-v="{_e(r["key"])}">{_e(keyword_label(r["key"]))}</td>']
    for k in ("precision", "recall", "f1", "support"):
      v = r.get(k)
      cells.append(f'<td data-col="{k}" data-v="{"" if v is None else v}">{_e(fmt(v))}</td>')
    for n in page.baseline_names:
      v = r.get("baselines", {}).get(n)
      cells.append(f'<td data-v="{"" if v is None else v}">{_e(fmt(v))}</td>')
    rows.append(f'<tr data-key="{_e(r["key"])}">{"".join(cells)}</tr>')
  return ('<table class="sortable keywords" id="keyword-table"><thead><tr><th>lesion keyword'
          '</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>'
          f"{base}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _confusion_table(rows: list) -> str:
  body = "".join(
      f"<tr><td>{_e(pair_label(r['missed']))}</td><td>{_e(pair_label(r['false']))}</td>"
      f"<td data-v=\"{r['count']}\">{r['count']}</td><td>{_e(', '.join(r['cases']))}</td></tr>"
      for r in rows)
  return ('<table class="sortable confusion"><thead><tr><th>missed (reference pair)</th>'
          "<th>falsely found (generated pair)</th><th>cases</th><th>e.g.</th></tr></thead>"
          f"<tbody>{body}</tbody></table>")


def _report_html(text: str, spans: list, token_spans: Sequence = ()) -> str:
  out = []
  for p in spans_lib.pieces(text, spans, token_spans):
    chunk = _e(text[p.start:p.end])
    classes, attrs = [], ""
    if p.span is not None:
      s = p.span
      classes += ["kw", s.cls]
      status = {kw.POSITIVE: "positive", kw.NEGATED: "negated", kw.UNCERTAIN: "uncertain"}.get(
          s.status, "not stated")
      pairs = "; ".join(f"{a}/{l}" for a, l in s.pairs)
      attrs += (f' data-key="{_e(s.key)}" data-cls="{_e(s.cls)}" data-start="{s.start}"'
                f' data-end="{s.end}" title="{_e(s.key)}: {status}, {_e(s.cls)}'
                f'{"; pairs " + _e(pairs) if pairs else ""}"')
    if p.token is not None:
      classes.append("w")
      attrs += f' data-t="{p.token}"'
    if classes:
      out.append(f'<span class="{" ".join(classes)}"{attrs}>{chunk}</span>')
    else:
      out.append(chunk)
  return "".join(out)


def _case_html(c: CaseView) -> str:
  filt = "".join(f' data-{k}="{_e(" ".join(v))}"' for k, v in c.filters.items())
  score = ""
  if c.score is not None:
    f1 = c.score.get("f1")
    score = (f' · clinical F1 <b data-case-f1="{"" if f1 is None else f1}">{_e(fmt(f1))}</b>'
             f' (tp {c.score["tp"]}, fp {c.score["fp"]}, fn {c.score["fn"]})')
  ref = ""
  if c.reference is not None:
    ref = (f'<div class="report ref"><h4>reference</h4><p>'
           f"{_report_html(c.reference, c.reference_spans)}</p></div>")
  gen = (f'<div class="report gen"><h4>generated <small>(click a word: where the last decoder '
         f'layer looked while writing it)</small></h4><p>'
         f"{_report_html(c.generated, c.generated_spans, c.token_spans)}</p>"
         f'<div class="att-caption" id="cap-{c.number}"></div></div>')
  data = {"grid": list(c.grid), "maps": c.maps, "share": c.visual_share}
  # A study's views side by side: the box and the image widen with them (CSS sets one view).
  wide = f' style="width: {DISPLAY_PX * c.views}px"' if c.views > 1 else ""
  return (f'<section class="case" id="case-{c.number}" data-n="{c.number}" '
          f'data-id="{_e(c.case_id)}" data-reason="{_e(c.reason)}"{filt}>'
          f'<h3>#{c.number} · {_e(c.case_id)} <span class="reason">{_e(c.reason)}</span>{score}'
          f'</h3><div class="row"><div class="img"{wide}><img alt="radiograph {_e(c.case_id)}" '
          f'src="data:image/png;base64,{c.image_png_b64}" width="{DISPLAY_PX * c.views}" '
          f'height="{DISPLAY_PX}"{wide}><canvas class="overlay" width="{DISPLAY_PX * c.views}" '
          f'height="{DISPLAY_PX}" data-token=""></canvas></div>{ref}{gen}</div>'
          f"{_json_script(f'att-{c.number}', data)}</section>")


def _filters(cases: list) -> str:
  keys = sorted({k for c in cases for v in c.filters.values() for k in v},
                key=lambda k: kw.KEYWORD_KEYS.index(k) if k in kw.KEYWORD_KEYS else 99)
  options = "".join(f'<option value="{_e(k)}">{_e(keyword_label(k))}</option>' for k in keys)
  wheres = [w for w in WHERE if any(w[0] in c.filters for c in cases)]
  where = "".join(f'<option value="{w}">{_e(label)}</option>' for w, label in wheres)
  return (f'<div class="filters">keyword <select id="filter-key"><option value="">(all cases)'
          f'</option>{options}</select> <select id="filter-where">{where}</select> '
          f'<span id="filter-count">{len(cases)} of {len(cases)} cases</span></div>')


def render(page: Page) -> str:
  """The whole HTML document of `page`."""
  facts = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for a, b in page.facts)
  notes = "".join(f'<p class="note">{_e(n)}</p>' for n in page.notes)
  legend = "".join(f'<span class="kw {c}">{_e(label)}</span>' for c, label in LEGEND)
  parts = [
      "<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      f"<title>{_e(page.title)}</title><style>{CSS % {'font': FONT_STACK, 'px': DISPLAY_PX}}"
      "</style></head><body>",
      f"<h1>{_e(page.title)}</h1><table class=\"facts\">{facts}</table>{notes}",
  ]
  if page.results:
    parts.append(f"<h2>Metrics</h2>{_metric_table(page)}")
  if page.metrics:
    parts.append("<details open><summary>every figure of the metrics file</summary>"
                 f"{_all_figures(page.metrics)}</details>")
  if page.curves_svg:
    parts.append(f'<h2>Training curves</h2><div class="curves">{page.curves_svg}</div>')
  if page.per_keyword:
    parts.append("<h2>Clinical scores per lesion keyword</h2><p>Pairs (anatomy, lesion) by "
                 "lesion; click a column to sort.</p>" + _keyword_table(page))
  if page.confusion:
    parts.append("<h2>Most-confused pairs</h2><p>In each case every missed reference pair is "
                 "counted with every falsely found generated pair (— : nothing on that side)."
                 "</p>" + _confusion_table(page.confusion))
  parts.append(f"<h2>Cases</h2><div class=\"legend\">{legend}</div>{_filters(page.cases)}")
  parts.extend(_case_html(c) for c in page.cases)
  parts.append(f"<script>{JS}</script></body></html>")
  return "\n".join(parts)
