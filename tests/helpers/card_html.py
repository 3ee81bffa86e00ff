"""Reads a report card back (stdlib html.parser), independently of how it was written."""

from __future__ import annotations

import html.parser
import json


class CardParser(html.parser.HTMLParser):
  """Collects the card's cases (reports' text, keyword spans, word pieces), metric cells,
  the metrics file's figures and the per-keyword rows."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.cases: list[dict] = []
    self.metric_cells: dict = {}
    self.figures: dict = {}
    self.keyword_rows: dict = {}
    self.charset = None
    self._stack: list[tuple[str, dict]] = []
    self._report = None  # "ref" | "gen" while inside that report's <p>
    self._piece = None
    self._cell = None
    self._row_key = None
    self._row_kind = None
    self._json_id = None

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "meta" and "charset" in a:
      self.charset = a["charset"]
    cls = (a.get("class") or "").split()
    if tag == "section" and "case" in cls:
      self.cases.append({"n": int(a["data-n"]), "id": a["data-id"], "reason": a["data-reason"],
                         "attrs": a, "ref": None, "gen": None})
    if tag == "div" and "report" in cls:
      side = "ref" if "ref" in cls else "gen"
      self.cases[-1][side] = {"text": "", "spans": [], "tokens": {}}
      self._side = side
    if tag == "p" and self._stack and self._stack[-1][0] == "div" and "report" in (
        self._stack[-1][1].get("class") or ""):
      self._report = self._side
    if tag == "span" and self._report:
      self._piece = a
    if tag == "td" and "data-metric" in a:
      self._cell = ("metric", (a["data-method"], a["data-metric"]))
      self.metric_cells[self._cell[1]] = ""
    if tag == "tr" and "data-metric-key" in a:
      self._row_key, self._row_kind = a["data-metric-key"], "figure"
      self.figures[self._row_key] = []
    if tag == "tr" and "data-key" in a:
      self._row_key, self._row_kind = a["data-key"], "keyword"
      self.keyword_rows[self._row_key] = []
    if tag == "td" and self._row_key is not None:
      self._cell = ("row", None)
      (self.figures if self._row_kind == "figure" else self.keyword_rows)[self._row_key].append("")
    if tag == "script" and a.get("type") == "application/json":
      self._json_id = a["id"]
      self._json = ""
    if tag not in ("meta", "img", "br", "input"):
      self._stack.append((tag, a))

  def handle_endtag(self, tag):
    if self._stack:
      self._stack.pop()
    if tag == "p":
      self._report = None
    if tag == "span":
      self._piece = None
    if tag == "td":
      self._cell = None
    if tag == "tr":
      self._row_key = None
    if tag == "script" and self._json_id:
      self.cases[-1]["attention"] = json.loads(self._json)
      self._json_id = None

  def handle_data(self, data):
    if self._json_id:
      self._json += data
      return
    if self._report:
      rep = self.cases[-1][self._report]
      start = len(rep["text"])
      rep["text"] += data
      p = self._piece
      if p is not None and "kw" in p.get("class", "").split():
        span = (int(p["data-start"]), int(p["data-end"]), p["data-key"], p["data-cls"])
        if not rep["spans"] or rep["spans"][-1] != span:
          rep["spans"].append(span)
        assert int(p["data-start"]) <= start and start + len(data) <= int(p["data-end"])
      if p is not None and "data-t" in p:
        t = int(p["data-t"])
        rep["tokens"][t] = rep["tokens"].get(t, "") + data
    if self._cell is not None:
      kind, key = self._cell
      if kind == "metric":
        self.metric_cells[key] += data
      elif self._row_key is not None:
        rows = self.figures if self._row_kind == "figure" else self.keyword_rows
        rows[self._row_key][-1] += data


def parse_card(text: str) -> CardParser:
  p = CardParser()
  p.feed(text)
  p.close()
  return p
