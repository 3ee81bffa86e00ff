"""The report card's parts without a model: labeler spans and their colours, generated words,
case selection, confusion counts, training curves read back, and the page in a headless browser.

References: the labeler's own `label_report` output, brute-force counts written here,
TensorBoard's EventAccumulator, and a page whose attention maps are chosen here.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from cnx2rg_jax.card import cases, curves, html_page, spans
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text.tokenizer import content_ids
from cnx2rg_jax.text.word_vocab import WordTokenizer
from cnx2rg_jax.training import metrics_io
from tests.helpers import card_browser
from tests.helpers.card_html import parse_card

REFERENCE = "右侧胸腔积液。两肺纹理增强。心影不大。"
GENERATED = "两肺纹理增强，左肺下野见斑片状影。未见胸腔积液。心影不大。"


def _view(number=1, reference=REFERENCE, generated=GENERATED, tokenizer=None, grid=(1, 1)):
  tok = tokenizer or WordTokenizer.build([reference, generated], min_count=1)
  ids = np.asarray(tok.encode(generated) + [2, 0, 0], np.int32)
  n = len(tok.encode(generated))
  maps = np.full((len(ids), *grid), 1.0 / (grid[0] * grid[1]), np.float32)
  ref_pairs = label_report(reference).pairs
  score = cases.case_scores([set(label_report(generated).pairs)], [set(ref_pairs)])[0]
  return html_page_case(number, reference, generated, ids, maps, np.ones(len(ids)), grid, tok,
                        score), n


def html_page_case(number, reference, generated, ids, maps, share, grid, tok, score):
  from cnx2rg_jax.card import build  # pylint: disable=import-outside-toplevel
  image = np.linspace(-1, 1, 32 * 32, dtype=np.float32).reshape(32, 32, 1)
  return build.case_view(number, f"case{number}", "all", image, generated, ids, maps, share,
                         grid, tok, reference, score)


def test_spans_are_the_labelers_and_coloured_against_the_other_report():
  page = html_page.Page(title="t", facts=[], cases=[_view()[0]])
  card = parse_card(html_page.render(page))
  (case,) = card.cases
  for side, text in (("ref", REFERENCE), ("gen", GENERATED)):
    labels = label_report(text)
    assert case[side]["text"] == labels.text
    # every mention of the labeler, with its span and keyword, in order; nothing else
    assert [(s, e, k) for s, e, k, _ in case[side]["spans"]] == [
        (m.start, m.end, m.key) for m in sorted(labels.mentions, key=lambda m: m.start)]
    for (s, e, k, _), m in zip(case[side]["spans"], sorted(labels.mentions,
                                                            key=lambda m: m.start)):
      assert labels.text[s:e] == labels.text[m.start:m.end]
  cls = {(labels_side, labels_text[s:e]): c for labels_side, labels_text in
         (("ref", label_report(REFERENCE).text), ("gen", label_report(GENERATED).text))
         for s, e, _, c in card.cases[0][labels_side]["spans"]}
  # 右侧胸腔积液: the generated report denies the effusion -> missed; there, negated.
  assert cls[("ref", "积液")] == "miss" and cls[("gen", "积液")] == "negated"
  # 纹理增强 in both: a match on both sides; 斑片状影 only generated: a false finding.
  assert cls[("ref", "增强")] == "match" and cls[("gen", "增强")] == "match"
  assert cls[("gen", "斑片状影")] == "false"
  assert cls[("ref", "心影")] == "negated"  # 心影不大: a normal verdict


def test_generated_words_are_the_tokens():
  view, n = _view()
  tok = WordTokenizer.build([REFERENCE, GENERATED], min_count=1)
  words = [tok.id_to_token(i) for i in tok.encode(GENERATED)]
  card = parse_card(html_page.render(html_page.Page(title="t", facts=[], cases=[view])))
  gen = card.cases[0]["gen"]
  assert [gen["tokens"][t] for t in range(n)] == words
  assert len(card.cases[0]["attention"]["maps"]) == n


def test_token_spans_map_through_cleaning():
  class Pieces:  # a tokenizer whose decoded text is not yet clean (ASCII comma and period)
    table = {5: "两肺", 6: "纹理", 7: ",", 8: "心影", 9: "不大", 10: "."}

    def decode(self, ids):
      return "".join(self.table[i] for i in content_ids(ids))

  ids = [5, 6, 7, 8, 9, 10, 2, 0]
  text = label_report(Pieces().decode(ids)).text
  assert text == "两肺纹理，心影不大。"
  got = [text[a:b] for a, b in spans.token_spans(Pieces(), ids, text)]
  assert got == ["两肺", "纹理", "，", "心影", "不大", "。"]


def test_select_cases_best_worst_random():
  f1s = [0.5, None, 1.0, 0.0, 0.25, 0.75, 1.0, None, 0.1, 0.9]
  scores = [cases.CaseScore(tp=int(10 * (f or 0)), fp=1, fn=1, f1=f, missed=(), false=())
            for f in f1s]
  chosen = cases.select_cases(scores, 7, seed=3)
  assert [i for i, r in chosen if r == "best"] == [2, 6]  # both 1.0; more tp, then index
  assert [i for i, r in chosen if r == "worst"] == [3, 8]
  drawn = [i for i, r in chosen if r == "random"]
  assert len(drawn) == 3 and not set(drawn) & {2, 6, 3, 8}
  assert chosen == cases.select_cases(scores, 7, seed=3)  # seeded
  assert cases.select_cases(scores, 0, seed=3) == [(i, "all") for i in range(10)]
  with pytest.raises(ValueError, match="card.num_cases"):
    cases.select_cases(scores, -1, seed=0)


def test_confusion_matches_a_brute_force_count():
  rng = np.random.default_rng(0)
  pairs = [("lung", "shadow"), ("chest", "effusion"), ("heart", "enhanced"), ("rib", "fracture")]
  preds, refs = [], []
  for _ in range(40):
    preds.append({p for p in pairs if rng.random() < 0.4})
    refs.append({p for p in pairs if rng.random() < 0.4})
  scores = cases.case_scores(preds, refs)
  rows = cases.confusion(scores, [str(i) for i in range(40)], top=100)
  expected = collections.Counter()
  for p, r in zip(preds, refs):
    missed, false = r - p, p - r
    if missed and false:
      expected.update(itertools.product(missed, false))
    else:
      expected.update((m, cases.NOTHING) for m in missed)
      expected.update((cases.NOTHING, f) for f in false)
  assert {(r["missed"], r["false"]): r["count"] for r in rows} == dict(expected)
  assert [r["count"] for r in rows] == sorted((r["count"] for r in rows), reverse=True)


def test_curves_read_back_like_tensorboard(tmp_path, monkeypatch):
  from tensorboard.backend.event_processing import event_accumulator as ea  # test-only
  # The two writers get file ids 9 and 10: their names must still sort in writing order.
  monkeypatch.setattr(metrics_io, "_WRITER_IDS", itertools.count(9))
  with metrics_io.SummaryWriter(str(tmp_path)) as w:
    for step in (2, 4, 6):
      w.scalars(step, {"train/loss": 3.0 / step, "val/bleu_4": 0.01 * step})
    w.text(6, "val/example_report", "两肺纹理增强。")
  with metrics_io.SummaryWriter(str(tmp_path), purge_step=4) as w:  # resumed at step 4
    w.scalars(4, {"train/loss": 0.5})
  got = curves.read_scalars(tmp_path)
  acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.SCALARS: 0})
  acc.Reload()
  for tag in ("train/loss", "val/bleu_4"):
    assert got[tag] == [(e.step, e.value) for e in acc.Scalars(tag)], tag
  assert got["train/loss"] == [(2, 1.5), (4, 0.5)]
  svg = curves.curves_svg(got)
  assert svg.startswith("<svg") and "val clinical F1" in svg and "no val/clinical_f1" in svg


def test_page_header_has_every_metric_and_keyword_row():
  metrics = {"bleu_1": 0.5, "bleu_4": 0.25, "meteor": None, "clinical_f1": 0.75, "tp": 3,
             "num_reports": 2, "step": 7,
             "per_keyword": {l: {"precision": 0.5, "recall": None, "f1": 0.25, "support": 4}
                             for l in kw.LESION_KEYS}}
  page = html_page.Page(title="t", facts=[("config", "c")], cases=[_view()[0]],
                        results={"CN-X2RG": metrics, "base": {"bleu_4": 0.125}},
                        metrics=metrics, table_metrics=("bleu_4", "clinical_f1"),
                        per_keyword=[{"key": l, **v, "baselines": {"base": 0.5}}
                                     for l, v in metrics["per_keyword"].items()],
                        baseline_names=["base"])
  text = html_page.render(page)
  card = parse_card(text)
  assert card.charset == "utf-8" and "Noto Sans CJK SC" in text and "Microsoft YaHei" in text
  for key, value in metrics.items():
    if key != "per_keyword":
      assert card.figures[key] == [key, html_page.fmt(value)], key
  assert card.metric_cells[("base", "bleu_4")] == "0.1250"
  assert card.metric_cells[("base", "clinical_f1")] == "n/a"
  assert set(card.keyword_rows) == set(kw.LESION_KEYS)
  assert card.keyword_rows["effusion"][1:] == ["0.5000", "n/a", "0.2500", "4", "0.5000"]
  assert "http://" not in text and "https://" not in text  # nothing loads from the network


@pytest.mark.skipif(card_browser.find_browser() is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_clicking_a_word_draws_its_heatmap_in_chromium(tmp_path):
  """A 3x3 map with its peak in the middle of the right column: the overlay's most opaque
  pixel lies in that cell of the 224x224 image. Then the keyword filter keeps the one case
  whose reference states an effusion."""
  tok = WordTokenizer.build([REFERENCE, GENERATED], min_count=1)
  ids = np.asarray(tok.encode(GENERATED) + [2], np.int32)
  maps = np.full((len(ids), 3, 3), 0.02, np.float32)
  maps[2, 1, 2] = 0.8  # token 2: row 1, column 2
  score = cases.case_scores([set(label_report(GENERATED).pairs)],
                            [set(label_report(REFERENCE).pairs)])[0]
  view = html_page_case(1, REFERENCE, GENERATED, ids, maps, np.full(len(ids), 0.9), (3, 3), tok,
                        score)
  other, _ = _view(2, reference="两肺纹理清晰。心影不大。", generated="两肺纹理清晰。心影不大。")
  path = tmp_path / "index.html"
  path.write_text(html_page.render(html_page.Page(title="t", facts=[], cases=[view, other])),
                  encoding="utf-8")
  got = card_browser.click_word(str(path), 1, 2, filter_by=("effusion", "ref"))
  assert got["clicked"] and got["token"] == "2" and got["on"] >= 1
  cell = 224 / 3
  assert got["painted"] > 0 and 120 <= got["max_alpha"] <= 160  # alpha 160 at the peak, smoothed
  assert int(got["max_x"] // cell) == 2 and int(got["max_y"] // cell) == 1, got
  assert tok.id_to_token(int(ids[2])) in got["caption"]
  # the filter: only case 1's reference states an effusion (右侧胸腔积液)
  assert got["shown"] == ["case1"] and got["count"] == "1 of 2 cases"
