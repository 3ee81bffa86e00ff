"""The rule-based report labeler, the clinical P/R/F1 it feeds, and its command line."""

import collections
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from tfds_cncxr.synthetic import findings as findings_lib
from tfds_cncxr.synthetic.reports import write_report

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("report, expected", [
    ("右侧胸腔积液", {"effusion": 1, "chest": 1}),
    ("未见胸腔积液", {"effusion": 0, "chest": 0}),
    ("考虑右侧胸腔积液", {"effusion": -1}),
    ("不除外少量积液", {"effusion": -1}),  # 不除外 is a hedge, not the negation 除外
    ("右侧胸腔积液不除外", {"effusion": -1}),  # the same cue after its finding
    ("除外气胸", {"gas": 0}),
    ("排除气胸", {"gas": 0}),
    ("两肺纹理增强，未见胸腔积液", {"lung": 1, "texture": 1, "enhanced": 1, "effusion": 0}),
    ("心影不大，右下肺野见片状影", {"heart": 0, "lung": 1, "shadow": 1}),
    ("未见气胸，但右侧肋骨骨折", {"gas": 0, "rib": 1, "fracture": 1}),
    ("未见气胸而右侧肋骨骨折", {"gas": 0, "fracture": 1}),
    ("其内无肺纹理", {"no_lung_texture": 1}),
    ("右肺上叶不张", {"lung": 1, "atelectasis": 1}),  # 不 inside the term 不张 is no cue
    ("两肺纹理清晰", {"lung": 0, "texture": 0}),
    ("双侧肋膈角锐利，两膈面光整", {"costophrenic_angle": 0, "diaphragmatic": 0}),
    ("右下肺野片状影，边缘清晰", {"lung": 1, "shadow": 1}),
    ("右下肺野片状影边缘清晰", {"lung": 1, "shadow": 1}),  # the verdict is about the margin
    ("双侧肋膈角欠锐利", {}),  # abnormal, but outside the lexicon
    ("右侧第5肋骨骨折？", {"rib": -1, "fracture": -1}),
    ("疑似右侧少量气胸", {"gas": -1}),
])
def test_mention_status(report, expected):
  got = label_report(report).keywords
  for key, value in expected.items():
    assert got.get(key) == value, (report, got)
  if not expected:
    assert got == {}, (report, got)


def test_values_merge_positive_over_uncertain_over_negated():
  got = label_report("未见胸腔积液。考虑左侧胸腔积液。右侧胸腔积液。").keywords
  assert got["effusion"] == kw.POSITIVE
  got = label_report("未见胸腔积液。考虑少量积液。").keywords
  assert got["effusion"] == kw.UNCERTAIN


@pytest.mark.parametrize("report, pairs", [
    ("右下肺野见片状影", [("lung", "shadow")]),
    ("主动脉结突出伴钙化", [("aortic_knot", "calcification"), ("aortic_knot", "prominence")]),
    ("两肺纹理增强", [("lung", "enhanced"), ("lung", "texture")]),
    ("气管及纵隔向右侧移位", [("mediastinum", "shift"), ("trachea", "shift")]),
    ("右侧气胸，右侧胸腔外带透亮度增高，其内无肺纹理",
     [("chest", "gas"), ("chest", "no_lung_texture"), ("chest", "transparency")]),
    ("两肺透亮度增高，呈肺气肿改变", [("lung", "emphysema"), ("lung", "transparency")]),
    ("未见胸腔积液", []),
    ("考虑右侧胸腔积液", []),  # only positive findings make pairs
])
def test_pairs(report, pairs):
  assert label_report(report).pairs == pairs


def test_mentions_index_the_cleaned_text():
  out = label_report("1. 两肺纹理增强\n2.心影不大")
  assert out.text == "两肺纹理增强。心影不大。"
  spans = {(out.text[m.start:m.end], m.key, m.status) for m in out.mentions}
  assert ("两肺", "lung", kw.POSITIVE) in spans and ("心影", "heart", kw.NEGATED) in spans


def _unigram_f1(a: str, b: str) -> float:
  """Character unigram overlap F1: a crude stand-in for BLEU-like n-gram metrics."""
  ca, cb = collections.Counter(a), collections.Counter(b)
  common = sum((ca & cb).values())
  p, r = common / sum(ca.values()), common / sum(cb.values())
  return 2 * p * r / (p + r)


def test_clinical_score_sees_negation_that_token_overlap_misses():
  seen = "两肺纹理清晰，右侧胸腔见积液。心影不大。"
  not_seen = "两肺纹理清晰，右侧胸腔未见积液。心影不大。"
  assert _unigram_f1(not_seen, seen) > 0.95  # one character apart
  assert clinical.score_reports([seen], [seen])["clinical_f1"] == 1.0
  flipped = clinical.score_reports([not_seen], [seen])
  assert flipped["clinical_f1"] == 0.0 and flipped["fn"] == 1 and flipped["fp"] == 0


def test_clinical_counts_hand_built():
  ref = [("lung", "shadow"), ("chest", "effusion"), ("rib", "fracture")]
  pred = [("lung", "shadow"), ("chest", "gas"), ("heart", "fracture"), ("lung", "shadow")]
  # TP: lung/shadow; FP: wrong lesion (chest/gas), wrong anatomy (heart/fracture); FN: 2 missed.
  assert clinical.clinical_counts(pred, ref) == (1, 2, 2)
  assert clinical.clinical_counts([], ref) == (0, 0, 3)
  assert clinical.clinical_counts(pred, []) == (0, 3, 0)
  assert clinical.clinical_counts([], []) == (0, 0, 0)


def test_score_reports_matches_brute_force_and_accepts_any_labeler():
  rng = np.random.default_rng(3)
  universe = [(a, l) for a in kw.ANATOMY_KEYS[:5] for l in kw.LESION_KEYS[:6]]
  table = {}
  preds, refs = [], []
  for i in range(40):
    for name, out in (("p", preds), ("r", refs)):
      table[f"{name}{i}"] = [universe[j] for j in rng.choice(len(universe), rng.integers(0, 5),
                                                             replace=False)]
      out.append(f"{name}{i}")
  got = clinical.score_reports(preds, refs, labeler=table.__getitem__)
  tp = fp = fn = 0
  per = collections.defaultdict(lambda: [0, 0, 0])
  for p, r in zip(preds, refs):
    for pair in universe:
      inp, inr = pair in table[p], pair in table[r]
      tp, fp, fn = tp + (inp and inr), fp + (inp and not inr), fn + (inr and not inp)
      per[pair[1]][0] += inp and inr
      per[pair[1]][1] += inp and not inr
      per[pair[1]][2] += inr and not inp
  assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn)
  assert got["clinical_precision"] == pytest.approx(tp / (tp + fp))
  assert got["clinical_recall"] == pytest.approx(tp / (tp + fn))
  p, r = tp / (tp + fp), tp / (tp + fn)
  assert got["clinical_f1"] == pytest.approx(2 * p * r / (p + r))
  for lesion, (t, f_p, f_n) in per.items():
    row = got["per_keyword"][lesion]
    assert row["support"] == t + f_n
    assert row["precision"] == pytest.approx(t / (t + f_p) if t + f_p else 0.0)
    assert row["recall"] == pytest.approx(t / (t + f_n) if t + f_n else 0.0)
  assert got["per_keyword"]["drainage"] == {"precision": None, "recall": None, "f1": None,
                                            "support": 0}


def test_memo_labeler_reads_each_report_once_and_changes_nothing():
  reports = ["左肺片状影。", "心影增大。", "两肺未见异常。", "右侧胸腔积液。"]
  texts = reports + reports[::-1] + reports[:2]
  seen = []

  class Batched:  # a label_many labeler, like CN-RadGraph's extractor

    def label_many(self, batch):
      seen.append(list(batch))
      return [label_report(r).pairs for r in batch]

    def __call__(self, report):
      return self.label_many([report])[0]

  memo = clinical.MemoLabeler(Batched())
  want = clinical.score_reports(texts, texts[::-1])
  assert clinical.score_reports(texts, texts[::-1], memo) == want
  assert clinical.score_reports(texts[:3], texts[3:6], memo) == clinical.score_reports(
      texts[:3], texts[3:6])
  assert sorted(r for batch in seen for r in batch) == sorted(reports)  # each one once
  assert memo(reports[1]) == clinical.pairs_of(label_report, reports[1]) and len(seen) == 1


def test_score_reports_edge_cases():
  nothing = clinical.score_reports(["心影不大。"], ["两肺纹理清晰。"])
  assert nothing["clinical_f1"] is None and nothing["clinical_precision"] is None
  silent = clinical.score_reports(["心影不大。"], ["右侧胸腔积液。"])
  assert (silent["clinical_precision"], silent["clinical_recall"], silent["clinical_f1"]) == (
      0.0, 0.0, 0.0)
  with pytest.raises(ValueError, match="pair up"):
    clinical.score_reports(["a"], [])


def test_agrees_with_synthetic_gold():
  rng = np.random.default_rng(11)
  n, agree = 1000, 0
  for _ in range(n):
    rep = write_report(findings_lib.sample_findings(rng), rng)
    got = label_report(rep.text)
    gold = {k: int(v) for k, v in zip(kw.KEYWORD_KEYS, rep.keyword_labels)
            if v != kw.NOT_MENTIONED}
    agree += got.keywords == gold and got.pairs == [tuple(p) for p in rep.pairs]
  assert agree / n >= 0.99, agree / n


def _cli(tmp_path, content: bytes):
  path = tmp_path / "in.jsonl"
  path.write_bytes(content)
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run([sys.executable, "-m", "cnx2rg_jax.evaluation.label", f"--input={path}"],
                        cwd=REPO, env=env, capture_output=True, timeout=120, check=False)


def test_cli_labels_each_line(tmp_path):
  lines = [{"id": "甲", "report": "右侧胸腔积液。心影不大。"}, {"id": 7, "report": "未见气胸"}]
  done = _cli(tmp_path, "".join(json.dumps(x, ensure_ascii=False) + "\n"
                                for x in lines).encode("utf-8"))
  assert done.returncode == 0, done.stderr.decode()
  out = [json.loads(l) for l in done.stdout.decode("utf-8").splitlines()]
  assert out == [
      {"id": "甲", "keywords": {"chest": 1, "heart": 0, "effusion": 1},
       "pairs": [["chest", "effusion"]]},
      {"id": 7, "keywords": {"gas": 0}, "pairs": []}]
  assert "甲" in done.stdout.decode("utf-8")  # ensure_ascii=False


@pytest.mark.parametrize("content, message", [
    (b'{"id": 1, "report": "a"}\n{"id": 2}\n', "line 2: no \"report\" field"),
    (b'{"id": 1, "report": "a"}\n{"id": 2, "report": "\xff"}\n', "line 2: not valid UTF-8"),
    (b'{"id": 1, "report": "a"}\n{"id": 2, "report": \n', "line 2: not valid JSON"),
    (b'{"id": 1, "report": "a"}\n{"id": 1, "report": "b"}\n', "line 2: repeats id 1"),
    (b"", "is empty"),
])
def test_cli_rejects_bad_input(tmp_path, content, message):
  done = _cli(tmp_path, content)
  assert done.returncode == 2
  assert message in done.stderr.decode("utf-8")
  assert done.stdout == b""


def test_rib_fracture_written_without_the_second_bone_character():
  out = label_report("右侧第5肋骨折。")
  assert out.keywords["fracture"] == 1 and ("rib", "fracture") in out.pairs
