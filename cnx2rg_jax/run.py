"""What `launch.py` runs for each --mode."""

from __future__ import annotations

import json
import logging
import sys

from cnx2rg_jax import config_checks, config_files, errors, predict
from cnx2rg_jax.bench import decode as decode_bench, input as input_bench, train as bench_train
from cnx2rg_jax.card import build as card_build
from cnx2rg_jax.data import dataset, keyword_table, vocabulary
from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.inference import evaluate, run_facts, trained
from cnx2rg_jax.radgraph import annotator as radgraph_annotator
from cnx2rg_jax.radgraph import extractor as radgraph_extractor
from cnx2rg_jax.radgraph import train as radgraph_train
from cnx2rg_jax.training import loop

MODES = ("train", "eval", "predict", "bench_input", "bench_decode", "bench_train", "table1",
         "ood_reference")

# Errors that mean "the input is wrong", shown as one paragraph instead of a traceback: every
# user error of the project (errors.UserError), and the operating system's refusals to open a file.
USER_ERRORS = (errors.UserError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError)
# The config file whose variants --mode=bench_train times (bench.train_configs: demo, paper, ...).
BENCH_TRAIN_CONFIG = str(config_files.REPO_ROOT / "configs" / "cnx2rg.py")
RADGRAPH_MODES = ("train", "eval")
CARD_MODES = ("eval", "predict")


def unknown_key_message(argv, error: Exception) -> str:
  """The message for a --config.KEY=VALUE override whose KEY the config file lacks."""
  bad = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  return (f"unknown config key ({error}) among the overrides {', '.join(bad) or '(none)'}; "
          "every key and its default is in the config file; check the spelling and the section "
          "(e.g. --config.train.num_steps=100, not --config.num_steps=100)")


def prepare_data(config, workdir: str) -> str:
  """Builds (or reuses) the dataset and the run's tokenizer; returns a summary paragraph."""
  prepared = dataset.prepare(config.data, dataset.num_views(config),
                             make_annotator=radgraph_annotator.make)
  train_texts = dataset.read_split_texts(prepared, "train")
  tok = vocabulary.tokenizer_for_run(config.text, prepared, workdir, train_texts)
  counts = {s: prepared.num_examples(s) for s in dataset.SPLITS}
  skipped = prepared.builder.info.metadata.get("num_skipped", 0)
  verb = f"built in {prepared.build_seconds:.1f} s" if prepared.built_now else "reused"
  lines = [
      f"Dataset cncxr/{prepared.builder.builder_config.name} {verb} at {prepared.builder.data_dir}",
      "  splits: " + ", ".join(f"{s} {n}" for s, n in counts.items())
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


def evaluate_run(config, workdir: str, split: str, card: bool = False, card_dir: str = "",
                 config_name: str = "", run=None) -> dict:
  """Beam search on `split` with the run's best checkpoint (`run`, else loaded), the baselines
  beside it; prints the table and writes DIR/eval/ (each report line with the run's provenance
  and the image's OOD score); with `card`, also the report card (DIR/eval/<split>_card/, or
  `card_dir`)."""
  run = run or trained.load(config, workdir)
  facts = run_facts.RunFacts.of(config, workdir, run)
  prepared = dataset.prepare(config.data, dataset.num_views(config),
                             make_annotator=radgraph_annotator.make)
  if split not in prepared.builder.info.splits:
    raise config_checks.ConfigError(f"--split={split} is not a split of this dataset; use one "
                                    f"of {', '.join(prepared.builder.info.splits)}")
  # Each report is labelled once, though the model, both baselines and the card score it.
  labeler = clinical.MemoLabeler(
      clinical.make_labeler(config.eval.clinical_scorer, config.eval.cn_radgraph_dir))
  ev = evaluate.evaluate_split(run.generator, run.variables, prepared, split, config,
                               run.tokenizer, labeler, workdir, run.step,
                               line_fields=facts.line_fields)
  results = ev.results
  print(f"\n{split} split, checkpoint step {run.step} ({run.chosen_by}), clinical pairs by "
        f"{config.eval.clinical_scorer}:\n{evaluate.table(results)}")
  auroc = results["CN-X2RG"].get("keyword_head_macro_auroc")
  if auroc is not None:
    print(f"keyword head macro AUROC {auroc:.3f} (per keyword: {split}_keyword_auroc.json)")
  print(f"wrote {workdir}/eval/{split}_metrics.json, {split}_reports.jsonl, {split}_table.md")
  if card:
    card_build.write_eval_card(config, workdir, split, run, prepared, results, ev.rows,
                               ev.outputs.token_ids, ev.outputs.index, labeler,
                               config_name=config_name, card_dir=card_dir, facts=facts)
  return results


def train_then_test(config, workdir: str, config_name: str = "") -> int:
  """--mode=train: data, training (with val evals), then the test table (and, with
  card.enabled, the test split's report card)."""
  config_checks.check_workdir(config, workdir)
  config_checks.write_config(config, workdir)
  print(prepare_data(config, workdir), flush=True)
  loop.train(config, workdir, make_validator=evaluate.make_validator,
             make_annotator=radgraph_annotator.make)
  run = trained.load(config, workdir)
  # provenance.json and the OOD reference belong to the checkpoint that eval and predict use
  run_facts.record_run(config, workdir, run)
  evaluate_run(config, workdir, "test", card=config.card.enabled,
               config_name=config_name, run=run)
  return 0


def main(config, *, workdir: str, mode: str, split: str, images, output: str,
         card: bool = False, card_dir: str = "", config_name: str = "",
         as_json: bool = False) -> int:
  """Runs `mode`. `card` (or a `card_dir`) makes --mode=eval and --mode=predict write the
  report card; `config_name` (the --config flag's value) is shown on it; `as_json` makes
  --mode=table1 print JSON."""
  card = card or bool(card_dir)
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    if card and mode not in CARD_MODES:
      raise card_build.CardError(f"--card/--card_dir make a report card in --mode=eval or "
                                 f"--mode=predict, not --mode={mode} (--mode=train writes the "
                                 "test card when card.enabled is true)")
    if card and config.get("task") == "cn_radgraph":
      raise card_build.CardError("--card/--card_dir: the report card is for CN-X2RG runs, not "
                                 "for the CN-RadGraph extractor (configs/cn_radgraph.py)")
    if config.get("task") == "cn_radgraph":
      return run_cn_radgraph(config, workdir, mode, split)
    if mode == "bench_input":
      print(json.dumps(input_bench.bench_input(config)))
      return 0
    if mode == "bench_decode":
      print(json.dumps(decode_bench.bench_decode(config)))
      return 0
    config_checks.check(config)
    if mode == "bench_train":
      print(json.dumps(bench_train.bench_train(config,
                                               config_files.getter(BENCH_TRAIN_CONFIG))))
      return 0
    if mode == "table1":
      prepared = dataset.prepare(config.data, dataset.num_views(config),
                                 make_annotator=radgraph_annotator.make)
      counts = keyword_table.keyword_counts(prepared)
      print(json.dumps(counts, ensure_ascii=False) if as_json else keyword_table.table(counts))
      return 0
    if mode == "train":
      return train_then_test(config, workdir, config_name)
    config_checks.check_workdir(config, workdir)
    if mode == "ood_reference":  # for a run trained (or converted) before DIR/ood/ existed
      run_facts.record_run(config, workdir, trained.load(config, workdir), keep_provenance=True,
                           with_ood=True)
      return 0
    if mode == "eval":
      evaluate_run(config, workdir, split, card=card, card_dir=card_dir, config_name=config_name)
      return 0
    return predict.run_predict(config, workdir, images, output,
                               card_dir=(card_dir or f"{workdir}/predict_card") if card else "",
                               config_name=config_name)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
