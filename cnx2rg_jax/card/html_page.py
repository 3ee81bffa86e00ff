"""The card's one HTML page: markup, CSS and the inline JavaScript (no network, no libraries).

`render(page)` returns the whole document. Everything it shows is passed in (`Page`, `CaseView`);
this module only lays it out. The script:
  * sorts a `table.sortable` by the clicked column (numbers numerically, blanks last);
  * on a click on a generated word (`.gen .w`), draws that token's cross-attention map over the
    case's radiograph: the [h, w] weights go into an h x w canvas as red with alpha ∝ weight /
    row max, which is then drawn, bilinearly smoothed, onto the overlay canvas;
  * filters the cases by keyword and by where it occurs (reference, generated, missed, false);
  * test hook: with `#test-click=N:T` in the URL, on load it clicks word T of case N through the
    same handler a user's click reaches (`element.click()` dispatches a click event) and writes
    what the overlay holds into <pre id="test-result"> (for the headless-browser test); with
    `&test-filter=KEY:WHERE` added it also sets the two filter menus and fires their 'change'
    event, and lists the cases left visible.
"""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Optional, Sequence

from cnx2rg_jax.card import spans as spans_lib
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


CSS = """
body { font-family: %(font)s; margin: 1.2em; color: #222; line-height: 1.5; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 0.2em 0; } h4 { margin: 0.1em 0; font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
table.sortable th.asc::after { content: " ▲"; } table.sortable th.desc::after { content: " ▼"; }
.facts td { text-align: left; border: none; padding: 0 8px 0 0; }
.case { border: 1px solid #ddd; border-radius: 6px; padding: 8px; margin: 10px 0; }
.case .row { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
.img { position: relative; width: %(px)dpx; height: %(px)dpx; flex: none; }
.img img { width: %(px)dpx; height: %(px)dpx; display: block; }
.img canvas { position: absolute; left: 0; top: 0; pointer-events: none; }
.report { flex: 1; min-width: 240px; font-size: 1.05em; }
.reason { font-weight: normal; font-size: 0.8em; background: #eee; border-radius: 3px; padding: 0 4px; }
.kw { border-radius: 2px; padding: 0 1px; }
.kw.match { background: #b7e4b0; } .kw.partial { background: #dff0a8; }
.kw.miss { background: #f8c9a0; } .kw.false { background: #f4a6a6; }
.kw.found { background: #a8d4f4; } .kw.unscored { background: #e6dcf5; }
.kw.negated { text-decoration: line-through; color: #666; background: #eee; }
.kw.uncertain { border-bottom: 2px dotted #a07000; }
.kw.anatomy { border-bottom: 1px solid #6a8caf; }
.gen .w { cursor: pointer; } .gen .w:hover { outline: 1px solid #999; }
.gen .w.on { outline: 2px solid #d00; }
.legend span { margin-right: 10px; font-size: 0.85em; }
.att-caption { font-size: 0.8em; color: #555; min-height: 1.2em; }
.filters { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #eee; }
.note { color: #8a5a00; font-size: 0.9em; }
#test-result { display: none; }
"""

JS = r"""
(function () {
  function cellValue(row, i) {
    var c = row.cells[i];
    var v = c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent;
    var n = parseFloat(v);
    return (v === '' || isNaN(n)) ? {num: false, v: v} : {num: true, v: n};
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th, i) {
      th.addEventListener('click', function () {
        var asc = !th.classList.contains('asc');
        table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, i), y = cellValue(b, i);
          if (x.v === '' && y.v !== '') return 1;
          if (y.v === '' && x.v !== '') return -1;
          var d = (x.num && y.num) ? x.v - y.v : String(x.v).localeCompare(String(y.v));
          return asc ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  var cache = {};
  function caseData(n) {
    if (!cache[n]) cache[n] = JSON.parse(document.getElementById('att-' + n).textContent);
    return cache[n];
  }
  function showAttention(caseEl, t) {
    var n = caseEl.getAttribute('data-n');
    var d = caseData(n);
    var m = d.maps[t];
    var canvas = caseEl.querySelector('canvas.overlay');
    var ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    caseEl.querySelectorAll('.gen .w.on').forEach(function (w) { w.classList.remove('on'); });
    caseEl.querySelectorAll('.gen .w[data-t="' + t + '"]').forEach(function (w) {
      w.classList.add('on');
    });
    if (!m) { canvas.setAttribute('data-token', ''); return; }
    var h = d.grid[0], w = d.grid[1];
    var small = document.createElement('canvas');
    small.width = w; small.height = h;
    var sctx = small.getContext('2d');
    var img = sctx.createImageData(w, h);
    var max = Math.max.apply(null, m) || 1;
    for (var i = 0; i < h * w; i++) {
      img.data[4 * i] = 255; img.data[4 * i + 1] = 30; img.data[4 * i + 2] = 0;
      img.data[4 * i + 3] = Math.round(160 * m[i] / max);
    }
    sctx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    canvas.setAttribute('data-token', String(t));
    var word = Array.prototype.map.call(
      caseEl.querySelectorAll('.gen .w[data-t="' + t + '"]'),
      function (x) { return x.textContent; }).join('');
    caseEl.querySelector('.att-caption').textContent = 'attention for “' + word + '” (token ' +
      t + '), ' + Math.round(100 * d.share[t]) + '% of it on the image patches (' + h + 'x' + w +
      ' grid)';
  }
  document.querySelectorAll('.case').forEach(function (caseEl) {
    caseEl.querySelectorAll('.gen .w').forEach(function (w) {
      w.addEventListener('click', function () {
        showAttention(caseEl, parseInt(w.getAttribute('data-t'), 10));
      });
    });
  });

  var key = document.getElementById('filter-key'), where = document.getElementById('filter-where');
  function applyFilter() {
    var k = key ? key.value : '', wh = where ? where.value : '';
    var shown = 0, all = document.querySelectorAll('.case');
    all.forEach(function (c) {
      var ok = !k || (' ' + (c.getAttribute('data-' + wh) || '') + ' ').indexOf(' ' + k + ' ') >= 0;
      c.style.display = ok ? '' : 'none';
      if (ok) shown++;
    });
    var cnt = document.getElementById('filter-count');
    if (cnt) cnt.textContent = shown + ' of ' + all.length + ' cases';
  }
  if (key) key.addEventListener('change', applyFilter);
  if (where) where.addEventListener('change', applyFilter);

  var hook = /test-click=(\d+):(\d+)/.exec(window.location.hash);
  if (hook) {
    var caseEl = document.getElementById('case-' + hook[1]);
    var word = caseEl && caseEl.querySelector('.gen .w[data-t="' + hook[2] + '"]');
    var result = {clicked: !!word};
    if (word) {
      word.click();
      var canvas = caseEl.querySelector('canvas.overlay');
      var px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      var painted = 0, best = -1, bx = -1, by = -1;
      for (var y = 0; y < canvas.height; y++) {
        for (var x = 0; x < canvas.width; x++) {
          var a = px[4 * (y * canvas.width + x) + 3];
          if (a > 0) painted++;
          if (a > best) { best = a; bx = x; by = y; }
        }
      }
      result.token = canvas.getAttribute('data-token');
      result.painted = painted;
      result.max_alpha = best; result.max_x = bx; result.max_y = by;
      result.width = canvas.width; result.height = canvas.height;
      result.on = caseEl.querySelectorAll('.gen .w.on').length;
      result.caption = caseEl.querySelector('.att-caption').textContent;
    }
    var filt = /test-filter=([a-z_]*):([a-z]+)/.exec(window.location.hash);
    if (filt && key && where) {  // choose a keyword and a place as a user does, then 'change'
      key.value = filt[1];
      where.value = filt[2];
      key.dispatchEvent(new Event('change'));
      result.shown = Array.prototype.filter.call(document.querySelectorAll('.case'),
        function (c) { return c.style.display !== 'none'; }).map(
        function (c) { return c.getAttribute('data-id'); });
      result.count = document.getElementById('filter-count').textContent;
    }
    var pre = document.createElement('pre');
    pre.id = 'test-result';
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  }
})();
"""


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
