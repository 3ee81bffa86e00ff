"""NLG metrics (cnx2rg_jax.evaluation.nlg), report files (reports_io) and the score CLI."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as coco_meteor
from pycocoevalcap.rouge.rouge import Rouge

from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.evaluation import nlg
from cnx2rg_jax.evaluation import reports_io
from cnx2rg_jax.evaluation import score
from cnx2rg_jax.text.cleaning import clean_report
from cnx2rg_jax.text.segmentation import segment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")

# (prediction, reference): identical, partial, reordered, unrelated, raw formatting, one empty.
PAIRS = [
    ("两肺纹理增多，心影不大。", "两肺纹理增多，心影不大。"),
    ("双肺纹理清晰，未见实质性病变。心影大小形态正常。", "双肺纹理清晰，未见实质性病变。心影不大。"),
    ("右下肺野见斑片状影，边缘模糊。", "右下肺野见斑片状密度增高影，考虑炎性病变。"),
    ("心影增大，主动脉结突出。", "心影增大，心胸比约0.6，主动脉结钙化。"),
    ("纵隔居中，双侧肋膈角锐利。", "双侧肋膈角锐利，纵隔居中。"),
    ("", "左侧胸腔积液，左肺下叶部分不张。"),
    ("两肺未见明显异常。", "两肺未见明显异常。"),
    ("右侧气胸，右肺压缩约30%。", "右侧气胸，肺组织压缩约40%。"),
    ("胸骨钢丝影，心影增大。", "胸骨钢丝影，起搏器置入术后改变。"),
    ("1. 两肺纹理增粗; 2. 心影不大.", "两肺纹理增粗、紊乱。心影不大。"),
    ("左上肺结节影，建议CT检查。", "左上肺见结节影，直径约1.2cm，建议CT进一步检查。"),
    ("脊柱侧弯。", "胸椎轻度侧弯，双侧膈面光整。"),
]


def _dicts(pairs=PAIRS):
  preds = {f"s{i}": p for i, (p, _) in enumerate(pairs)}
  refs = {f"s{i}": r for i, (_, r) in enumerate(pairs)}
  return preds, refs


def _coco(preds, refs):
  """What pycocoevalcap is given when called directly: {id: [jieba tokens, space-joined]}."""
  gts = {k: [" ".join(segment(clean_report(refs[k])))] for k in refs}
  res = {k: [" ".join(segment(clean_report(preds[k])))] for k in refs}
  return gts, res


def test_tokenize_keeps_punctuation_as_tokens():
  text = "心影不大, 纵隔居中;双侧肋膈角锐利"
  tokens = nlg.tokenize_for_metrics(text).split(" ")
  assert tokens == segment(clean_report(text))
  for mark in ("，", "；", "。"):
    assert mark in tokens
  assert "肋膈角" in tokens and "心影" in tokens
  assert nlg.tokenize_for_metrics("") == ""
  assert nlg.tokenize_for_metrics(" \n") == ""


def test_bleu_rouge_cider_equal_pycocoevalcap():
  preds, refs = _dicts()
  got = nlg.nlg_scores(preds, refs, meteor=False)
  gts, res = _coco(preds, refs)
  assert res["s5"] == [""]  # the empty prediction reaches the scorers unchanged
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  assert [got[f"bleu_{n}"] for n in (1, 2, 3, 4)] == [float(b) for b in bleu]
  assert got["rouge_l"] == float(Rouge().compute_score(gts, res)[0])
  assert got["cider"] == float(Cider().compute_score(gts, res)[0])
  assert got["meteor"] is None
  assert list(got) == list(nlg.METRIC_KEYS)
  assert all(type(got[k]) is float for k in got if k != "meteor")
  assert 0 < got["bleu_4"] < got["bleu_1"] < 1 and got["cider"] > 0


@needs_java
def test_meteor_equals_pycocoevalcap():
  preds, refs = _dicts()
  got = nlg.nlg_scores(preds, refs)
  gts, res = _coco(preds, refs)
  m = coco_meteor.Meteor()
  try:
    want, per_id = m.compute_score(gts, res)
  finally:
    nlg._close_meteor(m)  # pylint: disable=protected-access
  assert type(got["meteor"]) is float and got["meteor"] == float(want)
  assert per_id[5] == 0.0 and per_id[0] == pytest.approx(1.0, abs=0.01)
  assert 0 < got["meteor"] < 1


def test_bleu_known_answers():
  same = nlg.nlg_scores({1: "两肺纹理增多，心影不大。"}, {1: "两肺纹理增多，心影不大。"}, meteor=False)
  for n in (1, 2, 3, 4):
    assert same[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
  assert same["rouge_l"] == pytest.approx(1.0)
  disjoint = nlg.nlg_scores({1: "脊柱侧弯"}, {1: "两肺纹理增多"}, meteor=False)
  # clean_report adds a 。 to both, so only the unigram 。 matches: BLEU-1 = 1/3 * BP.
  hyp, ref = nlg.tokenize_for_metrics("脊柱侧弯"), nlg.tokenize_for_metrics("两肺纹理增多")
  h, r = len(hyp.split()), len(ref.split())
  bp = 1.0 if h >= r else math.exp(1 - r / h)
  assert disjoint["bleu_1"] == pytest.approx(bp / h, rel=1e-6)
  assert disjoint["bleu_4"] < 1e-3


def test_empty_prediction_is_zero_and_exact():
  ref_a, ref_b = "两肺纹理增多，心影不大。", "左侧胸腔积液。"
  got = nlg.nlg_scores({"a": ref_a, "b": ""}, {"a": ref_a, "b": ref_b}, meteor=False)
  la = len(nlg.tokenize_for_metrics(ref_a).split())
  lb = len(nlg.tokenize_for_metrics(ref_b).split())
  # All hypothesis n-grams are correct; the empty one only adds its reference length.
  bp = math.exp(1 - (la + lb) / la)
  for n in (1, 2, 3, 4):
    assert got[f"bleu_{n}"] == pytest.approx(bp, rel=1e-9)
  assert got["rouge_l"] == pytest.approx(0.5)
  # A placeholder token would change the corpus numbers, which is why none is used.
  placeholder = nlg.nlg_scores({"a": ref_a, "b": "□"}, {"a": ref_a, "b": ref_b}, meteor=False)
  assert placeholder["bleu_1"] != pytest.approx(got["bleu_1"], rel=1e-3)


def test_meteor_none_without_java(monkeypatch, caplog):
  real_which = shutil.which
  monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "java"
                      else real_which(cmd, *a, **k))
  preds, refs = _dicts()
  with caplog.at_level("WARNING"):
    got = nlg.nlg_scores(preds, refs)
  assert got["meteor"] is None
  assert got == nlg.nlg_scores(preds, refs, meteor=False)
  assert "METEOR is unavailable" in caplog.text and "default-jre-headless" in caplog.text


@needs_java
def test_meteor_none_when_jar_fails(monkeypatch, caplog):
  monkeypatch.setattr(coco_meteor, "METEOR_JAR", "no-such-meteor.jar")
  with caplog.at_level("WARNING"):
    got = nlg.nlg_scores({1: "心影不大。"}, {1: "心影不大。"})
  assert got["meteor"] is None and got["bleu_1"] == pytest.approx(1.0, abs=1e-6)
  assert "METEOR is unavailable" in caplog.text


def test_nlg_scores_rejects_bad_input():
  with pytest.raises(ValueError, match="different ids"):
    nlg.nlg_scores({1: "a"}, {2: "b"}, meteor=False)
  with pytest.raises(ValueError, match="empty"):
    nlg.nlg_scores({1: "心影不大"}, {1: "。"}, meteor=False)
  with pytest.raises(ValueError, match="no reports"):
    nlg.nlg_scores({}, {}, meteor=False)


def _line(i, pred="心影不大。", ref="心影不大。"):
  return json.dumps({"id": i, "prediction": pred, "reference": ref}, ensure_ascii=False)


GOOD = _line(1).encode()
BAD_FILES = {
    "missing_field": (GOOD + b"\n" + b'{"id": 2, "prediction": "x"}\n', 2, "missing field"),
    "non_string": (GOOD + b"\n\n" + _line(2, pred=5).encode() + b"\n", 3, "must be a string"),
    "non_utf8": (GOOD + b"\n" + _line(2).encode("gbk") + b"\n", 2, "UTF-8"),
    "invalid_json": (GOOD + b"\n" + b'{"id": 2, "prediction": \n', 2, "not valid JSON"),
    "not_object": (GOOD + b"\n" + b'["a"]\n', 2, "JSON object"),
    "bad_id": (_line(None).encode() + b"\n", 1, "'id'"),
    "empty_reference": (GOOD + b"\n" + _line(2, ref=" 。").encode() + b"\n", 2, "empty"),
    "duplicate": (GOOD + b"\n" + _line(2).encode() + b"\n" + _line("1").encode(), 3,
                  "already used on line 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_prediction_files_name_the_line(tmp_path, name):
  data, line, what = BAD_FILES[name]
  path = tmp_path / f"{name}.jsonl"
  path.write_bytes(data)
  with pytest.raises(reports_io.ReportsFileError) as e:
    reports_io.read_prediction_lines(path)
  assert f"{path}, line {line}:" in str(e.value) and what in str(e.value)
  assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("data", [b"", b"\n  \n\r\n"])
def test_empty_prediction_file(tmp_path, data):
  path = tmp_path / "empty.jsonl"
  path.write_bytes(data)
  with pytest.raises(reports_io.ReportsFileError, match="no reports") as e:
    reports_io.read_prediction_lines(path)
  assert str(path) in str(e.value)


def test_read_and_write_jsonl(tmp_path):
  rows = [{"id": "a", "prediction": "", "reference": "心影不大。", "extra": 1},
          {"id": 2, "prediction": "两肺纹理增多", "reference": "两肺纹理增多。"}]
  path = tmp_path / "p.jsonl"
  reports_io.write_jsonl(path, rows)
  assert "心影" in path.read_text(encoding="utf-8")  # not \u-escaped
  path.write_bytes(b"\xef\xbb\xbf\n" + path.read_bytes().replace(b"\n", b"\r\n\n"))
  assert reports_io.read_jsonl(path) == rows
  assert reports_io.read_prediction_lines(path) == rows


def _write_good(tmp_path):
  path = tmp_path / "preds.jsonl"
  reports_io.write_jsonl(path, [{"id": i, "prediction": p, "reference": r}
                                for i, (p, r) in enumerate(PAIRS)])
  return path


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "cnx2rg_jax.evaluation.score", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_cli_end_to_end(tmp_path):
  path = _write_good(tmp_path)
  java = shutil.which("java") is not None
  proc = _cli(f"--predictions={path}", *([] if java else ["--no_meteor"]))
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)  # exactly one JSON object on stdout
  for key in nlg.METRIC_KEYS + ("num_reports",):
    assert key in out
  assert out["num_reports"] == len(PAIRS)
  preds, refs = _dicts()
  want = nlg.nlg_scores(preds, refs, meteor=False)
  assert out["bleu_4"] == want["bleu_4"] and out["cider"] == want["cider"]
  assert (out["meteor"] is not None) == java
  want_clinical = clinical.score_reports([p for p, _ in PAIRS], [r for _, r in PAIRS])
  assert out["clinical_f1"] == want_clinical["clinical_f1"]


def test_cli_bad_input_exits_2(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(GOOD + b"\n" + b"{oops\n")
  proc = _cli(f"--predictions={path}", "--no_meteor")
  assert proc.returncode == 2 and proc.stdout == ""
  assert "line 2" in proc.stderr and "Traceback" not in proc.stderr
  proc = _cli(f"--predictions={tmp_path / 'missing.jsonl'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert _cli().returncode == 2  # --predictions is required


def test_cli_passes_reports_to_the_clinical_scorer(tmp_path, monkeypatch, capsys):
  path = _write_good(tmp_path)
  seen = {}

  def fake_score_reports(predictions, references, labeler):
    seen["args"] = (predictions, references)
    seen["labeler"] = labeler
    return {"clinical_precision": 0.5, "clinical_recall": 0.25, "clinical_f1": 1 / 3}

  monkeypatch.setattr(score.clinical, "score_reports", fake_score_reports)
  assert score.main([f"--predictions={path}", "--no_meteor"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["clinical_f1"] == pytest.approx(1 / 3)
  assert seen["args"] == ([p for p, _ in PAIRS], [r for _, r in PAIRS])
  assert seen["labeler"] is score.clinical.label_report  # the rule-based labeler by default
