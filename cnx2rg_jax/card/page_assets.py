"""The card page's stylesheet and inline JavaScript (no network, no libraries), which
`html_page.render` embeds. CSS is a %-template: %(font)s is the font stack, %(px)d the
radiograph's displayed size in pixels.

The script (JS):
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
