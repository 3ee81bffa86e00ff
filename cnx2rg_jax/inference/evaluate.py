"""Scoring generated reports: a split's beam-search reports, their metrics, the baselines beside
them, and the files of DIR/eval/.

    DIR/eval/<split>_metrics.json   the model's metrics (DESIGN.md's keys, plus per-keyword ones)
    DIR/eval/<split>_reports.jsonl  {"id", "prediction", "reference"} one line a report, plus
                                    what the caller adds (run.py: the run's provenance and
                                    each image's OOD score, inference.run_facts)
    DIR/eval/<split>_table.md       the model beside the baselines (--mode=train and eval)
    DIR/eval/<split>_keyword_auroc.json  the keyword head's AUROC per keyword (and macro mean)

`make_validator` is the val evaluation that the training loop runs every train.eval_every steps
(`training.loop.train(..., make_validator=...)`).

`evaluate_split` also hands back the rows and generated ids, from which `cnx2rg_jax.card` makes
DIR/eval/<split>_card/index.html (run.evaluate_run, with --card or card.enabled in training).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Optional

import jax
import numpy as np

from cnx2rg_jax.data import dataset
from cnx2rg_jax.evaluation import baselines, clinical, keyword_auroc, reports_io, score
from cnx2rg_jax.inference import generate

# The columns of the printed table and of TensorBoard's eval scalars.
TABLE_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
                 "clinical_precision", "clinical_recall", "clinical_f1")


# eval.references: what the generated reports are scored against.
#   "report": the cleaned report as written (the default);
#   "r2gen": the report as R2Gen's test loop scores it: encoded with the run's vocabulary (rare
#     words become <unk>), cut to its first data.max_tokens - 1 words (R2Gen's max_seq_length
#     minus bos), decoded. configs/r2gen.py uses it, so that the scores are R2Gen's.
REFERENCES = ("report", "r2gen")


def reference_text(report: str, references: str, tokenizer, max_tokens: int) -> str:
  if references == "report":
    return report
  if references == "r2gen":
    return tokenizer.decode(tokenizer.encode(report)[:max_tokens - 1])
  raise ValueError(f"eval.references={references!r}; choose one of {REFERENCES}")


def rows_of(texts: dataset.SplitTexts, index: np.ndarray, predictions: list[str],
            reference: Callable[[str], str] = lambda r: r) -> list[dict]:
  return [{"id": str(texts.ids[i]), "prediction": p, "reference": reference(texts.reports[i])}
          for i, p in zip(index.tolist(), predictions)]


def generate_split(generator: generate.ReportGenerator, variables, prepared, split: str, data,
                   tokenizer, limit: int = 0, texts: Optional[dataset.SplitTexts] = None,
                   references: str = "report") -> tuple[list[dict], generate.Outputs]:
  """Beam-search reports for `split` (its first `limit` examples if > 0): (rows, outputs).
  `texts` (the split's, from `dataset.read_split_texts`) spares re-reading them on every call;
  `references` is eval.references (REFERENCES)."""
  batches, steps = generate.split_batches(prepared, split, data, tokenizer,
                                          generator.local_batch, limit)
  out = generator.run_stream(variables, batches, steps)
  texts = texts if texts is not None else dataset.read_split_texts(prepared, split)
  return rows_of(texts, out.index, generate.decode_texts(tokenizer, out.token_ids),
                 lambda r: reference_text(r, references, tokenizer, data.max_tokens)), out


def head_auroc(texts: dataset.SplitTexts, out: generate.Outputs) -> Optional[dict]:
  """The keyword head's per-keyword AUROC on the rows of `out`, with its macro mean; None when
  the split's reports carry no keyword labels."""
  if not texts.has_keyword_labels[out.index].all():
    return None
  per = keyword_auroc.keyword_auroc(texts.keyword_labels[out.index], out.keyword_probs)
  return {"macro_auroc": keyword_auroc.macro_auroc(per), "per_keyword": per}


def split_features(generator: generate.ReportGenerator, variables, prepared, split: str, data,
                   tokenizer) -> generate.Outputs:
  """Pooled image features (and keyword probabilities) of every example of `split`."""
  batches, steps = generate.split_batches(prepared, split, data, tokenizer,
                                          generator.local_batch)
  return generator.run_stream(variables, batches, steps, with_reports=False)


def metrics_of(rows: list[dict], labeler: Callable, meteor: bool, step: Optional[int] = None
               ) -> dict:
  """DESIGN.md's metrics dict of `rows` (see `evaluation.score.score_rows`)."""
  out = score.score_rows(rows, meteor=meteor, labeler=labeler)
  if step is not None:
    out["step"] = int(step)
  return out


def baseline_rows(generator, variables, prepared, split: str, data, tokenizer,
                  test_out: generate.Outputs, rows: list[dict]) -> dict[str, list[dict]]:
  """The two baselines' predictions for the same rows as the model's (see `baselines`)."""
  train_texts = dataset.read_split_texts(prepared, "train")
  frequent = baselines.most_frequent_report(train_texts.reports)
  train_out = split_features(generator, variables, prepared, "train", data, tokenizer)
  neighbours = baselines.nearest_neighbour_reports(
      train_out.features, [train_texts.reports[i] for i in train_out.index], test_out.features)
  return {
      "most frequent train report": [{**r, "prediction": frequent} for r in rows],
      "nearest neighbour (image features)": [{**r, "prediction": p}
                                             for r, p in zip(rows, neighbours)],
  }


def write_split(workdir: str, split: str, metrics: dict, rows: list[dict]) -> pathlib.Path:
  out = pathlib.Path(workdir) / "eval"
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{split}_metrics.json").write_text(
      json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
  reports_io.write_jsonl(out / f"{split}_reports.jsonl", rows)
  return out


def _cell(value) -> str:
  return "n/a" if value is None else f"{value:.3f}"


def table(results: dict[str, dict]) -> str:
  """A Markdown table: one row a method, TABLE_METRICS as columns."""
  head = "| method | " + " | ".join(TABLE_METRICS) + " |"
  rule = "|---|" + "---:|" * len(TABLE_METRICS)
  body = [f"| {name} | " + " | ".join(_cell(m.get(k)) for k in TABLE_METRICS) + " |"
          for name, m in results.items()]
  return "\n".join([head, rule, *body])


@dataclasses.dataclass
class Evaluation:
  """What `evaluate_split` computed: the results by method name (the model's under "CN-X2RG"),
  the model's rows and its outputs (generated ids, row indices), aligned with the rows."""

  results: dict
  rows: list
  outputs: generate.Outputs


def evaluate_with_baselines(generator, variables, prepared, split: str, config, tokenizer,
                            labeler: Callable, workdir: str, step: int,
                            log: Callable[[str], None] = print) -> dict[str, dict]:
  """Beam search on `split`, the baselines, all scored; writes DIR/eval/; returns the results
  by method name (the model's under "CN-X2RG")."""
  return evaluate_split(generator, variables, prepared, split, config, tokenizer, labeler,
                        workdir, step, log).results


def evaluate_split(generator, variables, prepared, split: str, config, tokenizer,
                   labeler: Callable, workdir: str, step: int,
                   log: Callable[[str], None] = print,
                   line_fields: Optional[Callable[[np.ndarray], list[dict]]] = None
                   ) -> Evaluation:
  """`evaluate_with_baselines`, also returning the rows and the generator's outputs (what the
  report card needs). `line_fields(pooled features [N, D])` gives fields added to each written
  report line (the rows handed back stay as scored)."""
  start = time.perf_counter()
  texts = dataset.read_split_texts(prepared, split)
  rows, out = generate_split(generator, variables, prepared, split, config.data, tokenizer,
                             texts=texts, references=config.eval.references)
  log(f"generated {len(rows)} {split} reports ({generate.describe(config.decode)}) in "
      f"{time.perf_counter() - start:.1f} s")
  meteor = config.eval.meteor
  results = {"CN-X2RG": metrics_of(rows, labeler, meteor, step)}
  # Without the keyword loss the head is never trained: its constant output would score 0.5.
  auroc = head_auroc(texts, out) if config.train.keyword_weight > 0 else None
  if auroc is not None:
    results["CN-X2RG"]["keyword_head_macro_auroc"] = auroc["macro_auroc"]
  if config.eval.baselines:
    for name, b_rows in baseline_rows(generator, variables, prepared, split, config.data,
                                      tokenizer, out, rows).items():
      results[name] = metrics_of(b_rows, labeler, meteor)
  if jax.process_index() != 0:  # every process computed the same rows; one writes them
    return Evaluation(results, rows, out)
  written = rows if line_fields is None else [
      {**r, **f} for r, f in zip(rows, line_fields(out.features))]
  folder = write_split(workdir, split, results["CN-X2RG"], written)
  if config.eval.baselines:
    (folder / f"{split}_baselines.json").write_text(
        json.dumps({k: v for k, v in results.items() if k != "CN-X2RG"}, ensure_ascii=False,
                   indent=2) + "\n", encoding="utf-8")
  if auroc is not None:
    (folder / f"{split}_keyword_auroc.json").write_text(
        json.dumps(auroc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
  text = table(results)
  head_line = ("" if auroc is None or auroc["macro_auroc"] is None else
               f"\n\nkeyword head (classification auxiliary task): macro AUROC "
               f"{auroc['macro_auroc']:.3f} over the keywords the split has both ways; per "
               f"keyword in {split}_keyword_auroc.json")
  (folder / f"{split}_table.md").write_text(
      f"{split} split, {len(rows)} reports, checkpoint step {step}, clinical scorer "
      f"{config.eval.clinical_scorer}\n\n{text}{head_line}\n", encoding="utf-8")
  return Evaluation(results, rows, out)


def make_validator(config, model, mesh, prepared, tok, writer, log: Callable[[str], None]
                   ) -> Callable[[int, object], dict]:
  """The function (step, state) -> val metrics that `training.loop` runs every train.eval_every
  steps: beam search on val (its first eval.val_examples), scored, logged to `writer` (a
  `training.metrics_io.SummaryWriter`) and `log`."""
  generator = generate.ReportGenerator.from_config(model, mesh, config, tok)
  labeler = clinical.make_labeler(config.eval.clinical_scorer, config.eval.cn_radgraph_dir)
  val_texts = dataset.read_split_texts(prepared, "val")  # read once, not at every validation

  def validate(step: int, state) -> dict:
    start = time.perf_counter()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    rows, _ = generate_split(generator, variables, prepared, "val", config.data, tok,
                             limit=config.eval.val_examples, texts=val_texts,
                             references=config.eval.references)
    metrics = metrics_of(rows, labeler, meteor=False, step=step)
    scalars = {k: metrics[k] for k in TABLE_METRICS if metrics.get(k) is not None}
    writer.scalars(step, {"val/" + k: v for k, v in scalars.items()})
    writer.text(step, "val/example_report", rows[0]["prediction"])
    log(f"val @ step {step} ({len(rows)} reports, {time.perf_counter() - start:.0f} s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in scalars.items()))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

  return validate
