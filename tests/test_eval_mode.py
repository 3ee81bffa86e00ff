"""--mode=train end to end on a tiny run, then --mode=eval: val evals pick the checkpoint, the
files of DIR/eval/ are complete, and their metrics equal the score CLI's on the written reports."""

import json
import pathlib
import re

import numpy as np
import pytest

from cnx2rg_jax import run
from cnx2rg_jax.data import dataset
from cnx2rg_jax.evaluation import keyword_auroc, reports_io, score
from cnx2rg_jax.inference import evaluate, trained
from tests.conftest import tiny_model_config

DESIGN_KEYS = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
               "clinical_precision", "clinical_recall", "clinical_f1", "step", "num_reports"}


@pytest.fixture(scope="module")
def trained_run(tiny_synthetic, tmp_path_factory):
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.train.num_steps, config.train.eval_every, config.train.keep_last = 6, 2, 1
  config.train.lr_schedule, config.train.lr_rest, config.train.lr_visual = "constant", 3e-3, 1e-3
  workdir = str(tmp_path_factory.mktemp("run"))
  return config, workdir


def test_train_mode_runs_val_evals_then_the_test_table(trained_run, capsys):
  config, workdir = trained_run
  assert run.main(config, workdir=workdir, mode="train", split="test", images=[], output="") == 0
  out = capsys.readouterr().out
  val = {int(m.group(1)): float(m.group(2))
         for m in re.finditer(r"val @ step (\d+) .*?bleu_4 ([0-9.]+)", out)}
  assert sorted(val) == [2, 4, 6]
  # The test table has the model and both baselines, and names the checkpoint it used.
  for name in ("CN-X2RG", "most frequent train report", "nearest neighbour (image features)"):
    assert f"| {name} |" in out
  loaded = trained.load(config, workdir, log=lambda _: None)
  best = max(val.values())
  # the best kept checkpoint by val BLEU-4 (the earliest of equals, as Orbax ranks them)
  assert loaded.chosen_by == "best val bleu_4" and val[loaded.step] == pytest.approx(best, abs=1e-3)
  metrics = json.loads((pathlib.Path(workdir) / "eval" / "test_metrics.json").read_text())
  assert DESIGN_KEYS <= set(metrics) and metrics["step"] == loaded.step


def test_eval_mode_files_match_the_score_cli(trained_run, tiny_synthetic, capsys):
  config, workdir = trained_run
  assert run.main(config, workdir=workdir, mode="eval", split="val", images=[], output="") == 0
  assert "| CN-X2RG |" in capsys.readouterr().out
  rows = reports_io.read_prediction_lines(f"{workdir}/eval/val_reports.jsonl")
  prepared = dataset.prepare(config.data)
  texts = dataset.read_split_texts(prepared, "val")
  assert [r["id"] for r in rows] == texts.ids and [r["reference"] for r in rows] == texts.reports
  assert all(isinstance(r["prediction"], str) for r in rows)
  saved = json.loads(open(f"{workdir}/eval/val_metrics.json", encoding="utf-8").read())
  reference = score.score_rows(rows, meteor=False)
  for key in ("bleu_4", "rouge_l", "cider", "clinical_f1", "num_reports"):
    assert saved[key] == pytest.approx(reference[key], abs=1e-12), key
  # The keyword head's AUROC file: the labels' and the head's own, recomputed here.
  auroc = json.loads(open(f"{workdir}/eval/val_keyword_auroc.json", encoding="utf-8").read())
  loaded = trained.load(config, workdir, log=lambda _: None)
  out = evaluate.split_features(loaded.generator, loaded.variables, prepared, "val", config.data,
                                loaded.tokenizer)
  again = keyword_auroc.keyword_auroc(texts.keyword_labels[out.index], out.keyword_probs)
  assert list(auroc["per_keyword"]) == list(again)
  for key, value in again.items():  # another compiled program: ties may break apart, rarely
    got = auroc["per_keyword"][key]
    assert (got["positives"], got["negatives"]) == (value["positives"], value["negatives"])
    assert (got["auroc"] is None) == (value["auroc"] is None), key
    if value["auroc"] is not None:
      assert got["auroc"] == pytest.approx(value["auroc"], abs=0.05), key
  assert saved["keyword_head_macro_auroc"] == pytest.approx(auroc["macro_auroc"], abs=1e-12)
  baselines = json.loads(open(f"{workdir}/eval/val_baselines.json", encoding="utf-8").read())
  assert set(baselines) == {"most frequent train report", "nearest neighbour (image features)"}
  assert baselines["most frequent train report"]["num_reports"] == len(rows)


def test_eval_of_an_unknown_split_and_of_an_empty_workdir(trained_run, tmp_path, capsys):
  config, workdir = trained_run
  assert run.main(config, workdir=workdir, mode="eval", split="dev", images=[], output="") == 2
  assert "--split=dev is not a split" in capsys.readouterr().err
  assert run.main(config, workdir=str(tmp_path), mode="eval", split="val", images=[],
                  output="") == 2
  assert "holds no trained run" in capsys.readouterr().err


def test_features_are_what_the_encoder_computes(trained_run):
  """The retrieval baseline's features equal a direct call of the visual encoder."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  config, workdir = trained_run
  loaded = trained.load(config, workdir, log=lambda _: None)
  images = np.random.default_rng(0).normal(size=(3, 32, 32, 1)).astype(np.float32)
  index, ids, probs, feats = loaded.generator.run_batch(loaded.variables, images, np.arange(3))
  _, pooled = loaded.model.apply(loaded.variables, jnp.asarray(images),
                                 method=lambda m, x: m.visual(x, train=False))
  # Another batch size and another compiled program: float32 rounding, not a different value.
  np.testing.assert_allclose(feats, np.asarray(pooled), rtol=1e-4, atol=1e-5)
  assert ids.shape == (3, config.decode.max_len) and probs.shape == (3, 48)
  np.testing.assert_array_equal(index, np.arange(3))


def test_eval_without_baselines(trained_run, tmp_path, capsys):
  config, workdir = trained_run
  config = config.copy_and_resolve_references()
  config.eval.baselines = False
  import shutil  # pylint: disable=import-outside-toplevel
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  (copy / "eval" / "val_baselines.json").unlink(missing_ok=True)
  assert run.main(config, workdir=str(copy), mode="eval", split="val", images=[], output="") == 0
  out = capsys.readouterr().out
  assert "| CN-X2RG |" in out and "most frequent" not in out
  assert not (copy / "eval" / "val_baselines.json").exists()


def test_eval_mode_with_mbr_writes_the_generators_choice(trained_run, tmp_path, capsys):
  """--mode=eval with decode.method='mbr' (the demo's decoding): the log names it, and the
  written reports are what an MBR generator built from the same config picks (its choice is
  checked against brute force in tests/test_mbr.py)."""
  import shutil  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import generate  # pylint: disable=import-outside-toplevel
  config, workdir = trained_run
  config = config.copy_and_resolve_references()
  config.decode.method, config.decode.mbr_samples, config.decode.mbr_keyword_weight = "mbr", 3, 1.0
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  assert run.main(config, workdir=str(copy), mode="eval", split="val", images=[], output="") == 0
  assert "(MBR over 3 samples (T 1), keyword head weight 1 and beam 2)" in capsys.readouterr().out
  rows = reports_io.read_prediction_lines(f"{copy}/eval/val_reports.jsonl")
  loaded = trained.load(config, str(copy), log=lambda _: None)
  prepared = dataset.prepare(config.data)
  batches, steps = generate.split_batches(prepared, "val", config.data, loaded.tokenizer,
                                          loaded.generator.local_batch)
  out = loaded.generator.run_stream(loaded.variables, batches, steps)
  assert [r["prediction"] for r in rows] == generate.decode_texts(loaded.tokenizer, out.token_ids)
  # the val reports of the beam eval (test_eval_mode_files_match_the_score_cli, same checkpoint):
  # MBR wrote something else for some studies
  beam_rows = reports_io.read_prediction_lines(f"{workdir}/eval/val_reports.jsonl")
  assert [r["prediction"] for r in beam_rows] != [r["prediction"] for r in rows]
