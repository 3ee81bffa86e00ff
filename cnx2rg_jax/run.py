"""What `launch.py` runs for each --mode."""

from __future__ import annotations

import json
import logging
import pathlib
import sys

from cnx2rg_jax import bench
from cnx2rg_jax.data import bench as data_bench, dataset, vocabulary
from cnx2rg_jax.radgraph import annotations, extractor as radgraph_extractor
from cnx2rg_jax.radgraph import train as radgraph_train
from tfds_cncxr import release

MODES = ("train", "eval", "predict", "bench_input", "bench_decode", "bench_train")
_NOT_YET = {"eval": 5, "predict": 5, "bench_train": 5}

# Errors that mean "the input is wrong", shown as one paragraph instead of a traceback.
USER_ERRORS = (dataset.DataConfigError, release.BadExampleError, release.ReleaseFormatError,
               FileNotFoundError, annotations.AnnotationError, radgraph_train.RadGraphRunError,
               radgraph_extractor.CheckpointError)
RADGRAPH_MODES = ("train", "eval")


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
    if mode in _NOT_YET:
      print(f"--mode={mode} arrives with issue {_NOT_YET[mode]}; this build has the data "
            "pipeline only (--mode=train prepares the dataset and tokenizer).", file=sys.stderr)
      return 2
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
    print(prepare_data(config, workdir))
    print("Training arrives with issue 5 (model, optimizer, checkpoints); the data and tokenizer "
          "above are what it will train on.")
    return 0
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
