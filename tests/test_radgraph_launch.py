"""`launch.py --config=configs/cn_radgraph.py` as a user runs it, and the clinical metric scored
with the model it trains."""

import json
import pathlib
import subprocess
import sys

import pytest

from cnx2rg_jax.evaluation import clinical, score
from cnx2rg_jax.radgraph import annotation_writer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(*args):
  return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("radgraph") / "run"
  res = _launch("--config=" + str(REPO / "configs/cn_radgraph.py:tiny"), f"--workdir={workdir}")
  return workdir, res


def test_train_writes_a_model_and_prints_val_metrics(trained):
  workdir, res = trained
  assert res.returncode == 0, res.stderr
  last = json.loads(res.stdout.strip().splitlines()[-1])
  for key in ("entity_precision", "entity_recall", "entity_f1", "relation_precision",
              "relation_recall", "relation_f1"):
    assert 0.0 <= last[key] <= 1.0
  assert "val entity F1" in res.stdout
  meta = json.loads((workdir / "model" / "cn_radgraph.json").read_text())
  assert meta["metrics"]["val"]["entity_f1"] == last["entity_f1"]
  assert json.loads((workdir / "config.json").read_text())["task"] == "cn_radgraph"


def test_eval_mode_and_a_second_train_in_the_same_workdir(trained):
  workdir, _ = trained
  config = "--config=" + str(REPO / "configs/cn_radgraph.py:tiny")
  res = _launch(config, f"--workdir={workdir}", "--mode=eval", "--split=test")
  assert res.returncode == 0, res.stderr
  written = json.loads((workdir / "eval" / "cn_radgraph_test_metrics.json").read_text())
  assert written["split"] == "test" and written["num_reports"] == 12  # 60 reports, 7:1:2
  assert json.loads(res.stdout.strip().splitlines()[-1])["entity_f1"] == written["entity_f1"]
  before = (workdir / "config.json").read_text()
  again = _launch(config, f"--workdir={workdir}", "--config.train.num_steps=7")
  assert again.returncode == 2 and "already holds a trained CN-RadGraph" in again.stderr
  assert (workdir / "config.json").read_text() == before  # the refused run changed nothing
  assert "Traceback" not in again.stderr
  wrong = _launch(config, f"--workdir={workdir}", "--mode=bench_decode")
  assert wrong.returncode == 2 and "not a CN-RadGraph mode" in wrong.stderr


def test_bad_annotation_file_is_one_paragraph(tmp_path):
  bad = tmp_path / "a.json"
  bad.write_text('{"r1": {"text": "右侧胸腔积液。", "entities": {"1": {"tokens": "右侧", '
                 '"label": "Organ", "start_ix": 0, "end_ix": 1}}}}', encoding="utf-8")
  res = _launch("--config=" + str(REPO / "configs/cn_radgraph.py:tiny"),
                f"--workdir={tmp_path / 'run'}", "--config.data.source=file",
                f"--config.data.annotations={bad}")
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert "r1" in res.stderr and "Organ" in res.stderr


def test_score_cli_uses_the_model_for_clinical_pairs(trained, tmp_path, capsys):
  workdir, _ = trained
  reports = annotation_writer.synthetic_reports(12, seed=5)
  rows = [{"id": r.id, "prediction": r.text, "reference": r.text} for r in reports]
  path = tmp_path / "p.jsonl"
  path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), "utf-8")
  code = score.main([f"--predictions={path}", "--no_meteor", "--clinical=cn_radgraph",
                     f"--cn_radgraph_dir={workdir}"])
  out = json.loads(capsys.readouterr().out)
  assert code == 0 and out["clinical_scorer"] == "cn_radgraph"
  # The figures are the model's: the same as scoring with the loaded extractor directly.
  direct = clinical.score_reports([r.text for r in reports], [r.text for r in reports],
                                  clinical.make_labeler("cn_radgraph", str(workdir)))
  assert (out["tp"], out["fp"], out["fn"]) == (direct["tp"], direct["fp"], direct["fn"])
  assert out["bleu_4"] == pytest.approx(1.0)
  code = score.main([f"--predictions={path}", "--no_meteor", "--clinical=cn_radgraph",
                     f"--cn_radgraph_dir={tmp_path / 'none'}"])
  assert code == 2 and "no trained CN-RadGraph" in capsys.readouterr().err
  code = score.main([f"--predictions={path}", "--no_meteor", "--clinical=cn_radgraph"])
  assert code == 2 and "needs the workdir" in capsys.readouterr().err


def test_make_labeler_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown clinical scorer"):
    clinical.make_labeler("chexbert")
  assert clinical.make_labeler("labeler") is clinical.label_report
