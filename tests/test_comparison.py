"""The model comparison (`python -m cnx2rg_jax.ablation --compare=...`, cnx2rg_jax/comparison.py):
the table's arithmetic against NumPy, and the command end to end with the runs faked and one
model's costs really measured at tiny dims."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from cnx2rg_jax import ablation, comparison
from configs import cnx2rg

TINY = ["--config.model.resnet_depth=18", "--config.model.resnet_width=8",
        "--config.model.d_model=16", "--config.model.d_ff=16", "--config.model.cmm_dim=16",
        "--config.model.cmm_size=64", "--config.model.num_heads=2", "--config.data.crop_size=32",
        "--config.data.image_size=32", "--config.data.max_tokens=8", "--config.decode.max_len=8",
        "--config.train.batch_size=2", "--config.bench.train_vocab_size=30"]


def _fake_runner(root: pathlib.Path, table: dict, calls: list):
  def runner(cmd, log):
    calls.append(cmd)
    wd = pathlib.Path(next(a for a in cmd if a.startswith("--workdir=")).split("=", 1)[1])
    name, seed = wd.parent.name, int(wd.name.removeprefix("seed_"))
    (wd / "eval").mkdir(parents=True)
    (wd / "eval" / "test_metrics.json").write_text(
        json.dumps(dict(zip(comparison.QUALITY, table[name][seed].tolist()))))
    return 0
  return runner


def test_table_means_and_spreads(tmp_path):
  rng = np.random.default_rng(0)
  table = {n: rng.random((3, len(comparison.QUALITY))) for n in comparison.MODELS}
  calls = []
  costs = {n: {"device": "cpu", "parameters": 1000 + i, "train_examples_per_sec": 2.5,
               "train_state_mib": 1.0, "train_step_memory_mib": 3.0,
               "backend_peak_memory_mib": None} for i, n in enumerate(comparison.MODELS)}
  rc = ablation.compare(tmp_path / "runs", list(comparison.MODELS), [0, 1, 2], [], False,
                        tmp_path / "results", runner=_fake_runner(tmp_path, table, calls),
                        measure_fn=lambda name, vocab, overrides: costs[name],
                        get_config=cnx2rg.get_config)
  assert rc == 0 and len(calls) == 9
  assert any(c[2].endswith("configs/cnx2rg.py:cmn_demo") for c in calls)
  assert any(c[2].endswith("configs/cnx2rg.py:ablation=all") for c in calls)
  result = json.loads((tmp_path / "results" / "comparison.json").read_text())
  for name, values in table.items():
    entry = result["models"][name]
    assert entry["seeds"] == [0, 1, 2] and entry["costs"] == costs[name]
    for j, m in enumerate(comparison.QUALITY):
      assert entry["mean"][m] == pytest.approx(values[:, j].mean())
      assert entry["spread"][m] == pytest.approx(values[:, j].std(ddof=1))
  text = (tmp_path / "runs" / "comparison.md").read_text()
  m = comparison.QUALITY.index("clinical_f1")
  cmn = table["cmn"][:, m]
  assert f"{cmn.mean():.3f} ± {cmn.std(ddof=1):.3f}" in text
  assert "| cmn | 1,001 | 2.5 | 1.0 | 3.0 | n/a | cpu |" in text
  # a second call runs and measures nothing again (resumable)
  assert ablation.compare(tmp_path / "runs", ["cmn"], [0], [], False, None,
                          runner=lambda c, l: pytest.fail("ran again"),
                          measure_fn=lambda *a: pytest.fail("measured again"),
                          get_config=cnx2rg.get_config) == 0


def test_cli_errors(tmp_path, capsys):
  assert ablation.main(["--compare=r2gen,bogus", f"--root={tmp_path}"]) == 2
  assert "bogus" in capsys.readouterr().err
  assert ablation.main(["--names=r2gen"]) == 2  # the ablation still needs --root
  with pytest.raises(ValueError, match="not --config.KEY=VALUE"):
    comparison.config_of("cmn", ["--model.d_model=3"], get_config=cnx2rg.get_config)


def test_costs_are_measured_on_the_real_train_step(tmp_path):
  """R2GenCMN at tiny dims: the parameter count is the model's, the state holds the parameters
  and Adam's three moments, the compiled step more than its state (activations)."""
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  small = comparison.measure("cmn", 30, TINY, steps=1, warmup=0, get_config=cnx2rg.get_config)
  config = comparison.config_of("cmn", TINY, get_config=cnx2rg.get_config)
  assert config.model.architecture == "cmn" and config.model.d_model == 16
  model = factory.build_model(config, 30)
  want = sum(x.size for x in __import__("jax").tree.leaves(
      factory.random_variables(model, 32)["params"]))
  assert small["parameters"] == want and small["train_examples_per_sec"] > 0
  # the state: float32 parameters and Adam's mu, nu and AMSGrad's max (batch statistics aside)
  assert small["train_state_mib"] >= 4 * 4 * want / 2 ** 20
  assert small["train_step_memory_mib"] > small["train_state_mib"]
