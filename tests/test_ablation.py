"""The ablation runner and its table: resumable runs, mean and spread against NumPy, verdicts."""

import json
import pathlib

import numpy as np
import pytest

from cnx2rg_jax import ablation
from configs import cnx2rg


def _fake_run(root: pathlib.Path, name: str, seed: int, metrics: dict, auroc: dict | None = None):
  ev = ablation.run_dir(root, name, seed) / "eval"
  ev.mkdir(parents=True)
  (ev / "test_metrics.json").write_text(json.dumps(metrics))
  if auroc is not None:
    (ev / "test_keyword_auroc.json").write_text(json.dumps({"per_keyword": auroc}))


def test_aggregate_means_spreads_and_verdicts(tmp_path):
  rng = np.random.default_rng(0)
  table = {"r2gen": rng.random((3, len(ablation.METRICS))),
           "all": rng.random((3, len(ablation.METRICS)))}
  table["all"][:, ablation.METRICS.index("clinical_f1")] = [0.9, 0.91, 0.92]  # clearly better
  table["r2gen"][:, ablation.METRICS.index("clinical_f1")] = [0.1, 0.12, 0.11]
  table["all"][:, ablation.METRICS.index("bleu_4")] = [0.40, 0.45, 0.50]  # within the spread
  table["r2gen"][:, ablation.METRICS.index("bleu_4")] = [0.41, 0.43, 0.45]
  for name, values in table.items():
    for seed, row in enumerate(values):
      _fake_run(tmp_path, name, seed, dict(zip(ablation.METRICS, row.tolist())),
                {"effusion": {"auroc": 0.5 + 0.1 * seed}, "rib": {"auroc": None}})
  result = ablation.aggregate(tmp_path, cnx2rg.ABLATIONS)
  for name, values in table.items():
    entry = result["configs"][name]
    assert entry["seeds"] == [0, 1, 2]
    for j, m in enumerate(ablation.METRICS):
      assert entry["mean"][m] == pytest.approx(values[:, j].mean())
      assert entry["spread"][m] == pytest.approx(values[:, j].std(ddof=1))
    assert entry["keyword_auroc_mean"] == {"effusion": pytest.approx(0.6), "rib": None}
  vs = result["vs_r2gen"]["all"]
  assert vs["clinical_f1"]["verdict"] == "better"
  assert vs["clinical_f1"]["difference"] == pytest.approx(0.8)
  assert vs["bleu_4"]["verdict"] == "no difference"
  text = ablation.markdown(result)
  assert "| all | 3 |" in text and "+0.800 (better)" in text and "| effusion |" in text
  assert "| rib |" not in text  # no AUROC anywhere: no row


def test_an_untrained_keyword_head_reports_no_auroc(tmp_path):
  # Without the keyword loss the head's constant output scores 0.5 everywhere: not a measurement.
  for seed in (0, 1):
    _fake_run(tmp_path, "r2gen", seed, {"bleu_4": 0.4, "keyword_head_macro_auroc": 0.5},
              {"effusion": {"auroc": 0.5}})
    (ablation.run_dir(tmp_path, "r2gen", seed) / "config.json").write_text(
        json.dumps({"train": {"keyword_weight": 0.0}}))
  _fake_run(tmp_path, "keyword_loss", 0, {"bleu_4": 0.4, "keyword_head_macro_auroc": 0.9},
            {"effusion": {"auroc": 0.9}})
  (ablation.run_dir(tmp_path, "keyword_loss", 0) / "config.json").write_text(
      json.dumps({"train": {"keyword_weight": 1.0}}))
  result = ablation.aggregate(tmp_path, cnx2rg.ABLATIONS)
  r2gen, kw_loss = result["configs"]["r2gen"], result["configs"]["keyword_loss"]
  assert r2gen["mean"]["keyword_head_macro_auroc"] is None and r2gen["keyword_auroc_mean"] == {}
  assert kw_loss["mean"]["keyword_head_macro_auroc"] == pytest.approx(0.9)
  assert "| effusion | n/a | 0.900 |" in ablation.markdown(result)


def test_run_all_skips_finished_runs_and_reports_failures(tmp_path):
  _fake_run(tmp_path, "r2gen", 0, {"bleu_4": 0.1})
  calls = []

  def runner(cmd, log):
    calls.append(cmd)
    wd = pathlib.Path(next(a for a in cmd if a.startswith("--workdir=")).split("=", 1)[1])
    if "ablation=all" in " ".join(cmd):
      return 1  # a crashed run
    _fake_run(tmp_path, wd.parent.name, int(wd.name.removeprefix("seed_")), {"bleu_4": 0.2})
    return 0

  failed = ablation.run_all(tmp_path, ["r2gen", "all"], [0, 1], ["--config.train.num_steps=5"],
                            runner=runner, log=lambda _: None,
                            variants=ablation.ablation_variants(cnx2rg.ABLATIONS))
  assert failed == [("all", 0), ("all", 1)]
  assert len(calls) == 3  # r2gen seed 0 was done before
  first = calls[0]
  assert first[-1] == "--config.train.num_steps=5" and "--config.seed=1" in first
  assert first[2].endswith("configs/cnx2rg.py:ablation=r2gen")
  with pytest.raises(ValueError, match="unknown ablation 'bogus'"):
    ablation.run_all(tmp_path, ["bogus"], [0], runner=runner, log=lambda _: None,
                     variants=ablation.ablation_variants(cnx2rg.ABLATIONS))


def test_cli_rejects_unknown_names(tmp_path, capsys):
  assert ablation.main(["--root", str(tmp_path), "--names", "r2gen,nope", "--aggregate_only"]) == 2
  assert "nope" in capsys.readouterr().err
