"""Checks of a run's report card against the run's own files and the labeler; shared by the
card tests (and usable by any test whose tiny run wrote a card, e.g. --mode=train's)."""

from __future__ import annotations

import json
import pathlib

import pytest

from cnx2rg_jax.card import html_page
from cnx2rg_jax.data import dataset
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.inference import evaluate
from tests.helpers.card_html import parse_card


def card_text(workdir, split: str = "test") -> str:
  return (pathlib.Path(workdir) / "eval" / f"{split}_card" / "index.html").read_text(
      encoding="utf-8")


def _rows(workdir, split="test"):
  lines = (pathlib.Path(workdir) / "eval" / f"{split}_reports.jsonl").read_text(encoding="utf-8")
  return [json.loads(s) for s in lines.splitlines()]


def check_every_case_and_metric(config, workdir, split: str = "test") -> None:
  """With card.num_cases 0 (or >= the split): every case of the split, in order, and every
  figure of the metrics file, the metric table beside the baselines, the per-keyword rows."""
  text = card_text(workdir, split)
  card = parse_card(text)
  rows = _rows(workdir, split)
  texts = dataset.read_split_texts(dataset.prepare(config.data), split)
  assert [c["id"] for c in card.cases] == [r["id"] for r in rows] == texts.ids
  assert [c["n"] for c in card.cases] == list(range(1, len(rows) + 1))
  metrics = json.loads((pathlib.Path(workdir) / "eval" / f"{split}_metrics.json").read_text())
  scalars = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
  assert len(scalars) >= 14 and "clinical_f1" in scalars and "step" in scalars
  for key, value in scalars.items():
    assert card.figures[key] == [key, html_page.fmt(value)], key
  baselines = json.loads((pathlib.Path(workdir) / "eval" / f"{split}_baselines.json").read_text())
  for method, m in {"CN-X2RG": metrics, **baselines}.items():
    for key in evaluate.TABLE_METRICS:
      assert card.metric_cells[(method, key)] == html_page.fmt(m.get(key)), (method, key)
  assert set(card.keyword_rows) == set(metrics["per_keyword"])
  for key, v in metrics["per_keyword"].items():
    assert card.keyword_rows[key][1:5] == [html_page.fmt(v[k]) for k in
                                           ("precision", "recall", "f1", "support")], key
  assert "config" in text and "configs/cnx2rg.py" in text and "<svg" in text  # curves
  assert 'charset="utf-8"' in text and "Noto Sans CJK SC" in text


def check_spans_are_the_labelers(workdir, split: str = "test") -> None:
  """Both reports of every case show exactly the labeler's mentions (span, keyword) on the
  labeler's cleaned text, coloured by status and by the other report's pairs."""
  card = parse_card(card_text(workdir, split))
  by_id = {r["id"]: r for r in _rows(workdir, split)}
  checked = 0
  for case in card.cases:
    row = by_id[case["id"]]
    ref, gen = label_report(row["reference"]), label_report(row["prediction"])
    for side, labels, other in (("ref", ref, gen), ("gen", gen, ref)):
      assert case[side]["text"] == labels.text
      mentions = sorted(labels.mentions, key=lambda m: m.start)
      assert [s[:3] for s in case[side]["spans"]] == [(m.start, m.end, m.key) for m in mentions]
      for (_, _, _, cls), m in zip(case[side]["spans"], mentions):
        checked += 1
        if m.status == kw.NEGATED:
          assert cls == "negated"
        elif m.status == kw.POSITIVE and m.kind == "lesion" and m.anatomy:
          mine = {(a, m.key) for a in m.anatomy}
          if mine <= set(other.pairs):
            assert cls == "match"
          elif not mine & set(other.pairs):
            assert cls == ("miss" if side == "ref" else "false")
  assert checked > 20


def check_words_and_attention_rows(workdir, split: str = "test") -> None:
  """Every generated token is a clickable word with one attention row; the words cover the
  text; each row sums to its share on the patches."""
  for case in parse_card(card_text(workdir, split)).cases:
    gen, att = case["gen"], case["attention"]
    n = len(att["maps"])
    assert sorted(gen["tokens"]) == list(range(n))
    # the words cover the generated text in order (the tiny run's words, no gaps)
    assert "".join(gen["tokens"][t] for t in range(n)) == gen["text"]
    h, w = att["grid"]
    for m, share in zip(att["maps"], att["share"]):
      assert len(m) == h * w
      assert sum(m) == pytest.approx(share, abs=2e-4) and 0 < share <= 1.0001


