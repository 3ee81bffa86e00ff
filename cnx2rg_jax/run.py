"""What `launch.py` runs for each --mode."""

from __future__ import annotations

import json
import logging
import sys

from cnx2rg_jax import bench, config_checks, predict, sharding
from cnx2rg_jax.data import bench as data_bench, dataset, vocabulary
from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.radgraph import annotations, extractor as radgraph_extractor
from cnx2rg_jax.radgraph import train as radgraph_train
from cnx2rg_jax.training import bench_train, checkpoints, evaluate, loop, trained
from tfds_cncxr import release

MODES = ("train", "eval", "predict", "bench_input", "bench_decode", "bench_train")

# Errors that mean "the input is wrong", shown as one paragraph instead of a traceback.
USER_ERRORS = (dataset.DataConfigError, release.BadExampleError, release.ReleaseFormatError,
               FileNotFoundError, annotations.AnnotationError, radgraph_train.RadGraphRunError,
               radgraph_extractor.CheckpointError, config_checks.ConfigError,
               config_checks.WorkdirError, checkpoints.CheckpointError, loop.NonFiniteLossError,
               PermissionError, IsADirectoryError, NotADirectoryError,
               sharding.MeshConfigError)
RADGRAPH_MODES = ("train", "eval")


def unknown_key_message(argv, error: Exception) -> str:
  """The message for a --config.KEY=VALUE override whose KEY the config file lacks."""
  bad = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  return (f"unknown config key ({error}) among the overrides {', '.join(bad) or '(none)'}; "
          "every key and its default is in the config file; check the spelling and the section "
          "(e.g. --config.train.num_steps=100, not --config.num_steps=100)")


def prepare_data(config, workdir: str) -> str:
  """Builds (or reuses) the dataset and the run's tokenizer; returns a summary paragraph."""
  prepared = dataset.prepare(config.data)
  train_texts = dataset.read_split_texts(prepared, "train")
  tok = vocabulary.tokenizer_for_run(config.text, prepared, workdir, train_texts)
  counts = {s: prepared.num_examples(s) for s in dataset.SPLITS}
  skipped = prepared.builder.info.metadata.get("num_skipped", 0)
  verb = f"built in {prepared.build_seconds:.1f} s" if prepared.built_now else "reused"
  lines = [
      f"Dataset cncxr/{prepared.builder.builder_config.name} {verb} at {prepared.builder.data_dir}",
      f"  splits: " + ", ".join(f"{s} {n}" for s, n in counts.items())
      + (f"  ({skipped} bad entries skipped, ids in dataset metadata)" if skipped else ""),
      f"  tokenizer: {config.text.tokenizer}, {tok.vocab_size} tokens -> {workdir}/tokenizer",
      f"  example report: {train_texts.reports[0]}",
  ]
  return "\n".join(lines)


def run_cn_radgraph(config, workdir: str, mode: str, split: str) -> int:
  """--config=configs/cn_radgraph.py: train the extractor, or evaluate it on --split."""
  if mode not in RADGRAPH_MODES:
    raise radgraph_train.RadGraphRunError(
        f"--mode={mode} is not a CN-RadGraph mode; configs/cn_radgraph.py runs "
        f"{' or '.join(RADGRAPH_MODES)}")
  if mode == "eval":
    scores = radgraph_train.eval_split(config, workdir, split)
  else:
    scores = radgraph_train.train(config, workdir)
    print(f"saved the best model (val relation F1) to {workdir}/{radgraph_extractor.MODEL_DIR}")
  print(json.dumps({k: v for k, v in scores.items() if k != "per_label"}))
  return 0


def evaluate_run(config, workdir: str, split: str) -> dict:
  """Beam search on `split` with the run's best checkpoint, the baselines beside it; prints the
  table and writes DIR/eval/."""
  run = trained.load(config, workdir)
  prepared = dataset.prepare(config.data)
  if split not in prepared.builder.info.splits:
    raise config_checks.ConfigError(f"--split={split} is not a split of this dataset; use one "
                                    f"of {', '.join(prepared.builder.info.splits)}")
  labeler = clinical.make_labeler(config.eval.clinical_scorer, config.eval.cn_radgraph_dir)
  results = evaluate.evaluate_with_baselines(run.generator, run.variables, prepared, split,
                                             config, run.tokenizer, labeler, workdir, run.step)
  print(f"\n{split} split, checkpoint step {run.step} ({run.chosen_by}), clinical pairs by "
        f"{config.eval.clinical_scorer}:\n{evaluate.table(results)}")
  auroc = results["CN-X2RG"].get("keyword_head_macro_auroc")
  if auroc is not None:
    print(f"keyword head macro AUROC {auroc:.3f} (per keyword: {split}_keyword_auroc.json)")
  print(f"wrote {workdir}/eval/{split}_metrics.json, {split}_reports.jsonl, {split}_table.md")
  return results


def train_then_test(config, workdir: str) -> int:
  """--mode=train: data, training (with val evals), then the test table."""
  config_checks.check_workdir(config, workdir)
  config_checks.write_config(config, workdir)
  print(prepare_data(config, workdir), flush=True)
  loop.train(config, workdir)
  evaluate_run(config, workdir, "test")
  return 0


def main(config, *, workdir: str, mode: str, split: str, images, output: str) -> int:
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    if config.get("task") == "cn_radgraph":
      return run_cn_radgraph(config, workdir, mode, split)
    if mode == "bench_input":
      print(json.dumps(data_bench.bench_input(config)))
      return 0
    if mode == "bench_decode":
      print(json.dumps(bench.bench_decode(config)))
      return 0
    config_checks.check(config)
    if mode == "bench_train":
      print(json.dumps(bench_train.bench_train(config)))
      return 0
    if mode == "train":
      return train_then_test(config, workdir)
    config_checks.check_workdir(config, workdir)
    if mode == "eval":
      evaluate_run(config, workdir, split)
      return 0
    return predict.run_predict(config, workdir, images, output)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
