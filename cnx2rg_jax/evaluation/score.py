"""Scores a predictions file: `python -m cnx2rg_jax.evaluation.score --predictions=F.jsonl`.

F.jsonl holds one {"id", "prediction", "reference"} object a line (see `reports_io`). Prints ONE
JSON object to stdout: bleu_1..bleu_4, meteor (null without Java), rouge_l, cider (see
`nlg.nlg_scores`), num_reports, and the clinical figures of `clinical.score_reports`
(clinical_precision, clinical_recall, clinical_f1, ...) and clinical_scorer. Warnings go to
stderr. The clinical pairs come from the rule-based labeler, or with
`--clinical=cn_radgraph --cn_radgraph_dir=DIR` from a CN-RadGraph trained in DIR.

Exit codes: 0 on success; 2 for unusable input (a bad file, or bad flags), with a one-paragraph
message on stderr and no traceback (also for a DIR without a usable model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.evaluation import nlg
from cnx2rg_jax.evaluation import reports_io


def score_rows(rows: list[dict], meteor: bool = True,
               labeler: Callable = clinical.label_report) -> dict:
  """The metrics of `read_prediction_lines` rows, in the CLI's output form.

  Returns {bleu_1..bleu_4, meteor, rouge_l, cider, num_reports, <clinical figures>}; every
  number is a plain float or int (meteor may be None).
  """
  predictions = {row["id"]: row["prediction"] for row in rows}
  references = {row["id"]: row["reference"] for row in rows}
  out: dict = dict(nlg.nlg_scores(predictions, references, meteor=meteor))
  out["num_reports"] = len(rows)
  out.update(clinical.score_reports([row["prediction"] for row in rows],
                                    [row["reference"] for row in rows], labeler))
  return out


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m cnx2rg_jax.evaluation.score",
      description="NLG (BLEU, METEOR, ROUGE-L, CIDEr) and clinical scores of a predictions file.")
  p.add_argument("--predictions", required=True,
                 help='JSON lines file, one {"id", "prediction", "reference"} object a line')
  p.add_argument("--no_meteor", action="store_true",
                 help="skip METEOR (its Java jar takes several seconds to load); meteor is null")
  p.add_argument("--clinical", default="labeler", choices=clinical.CLINICAL_SCORERS,
                 help="what reads the (anatomy, lesion) pairs: the rule-based labeler, or a "
                 "trained CN-RadGraph (give --cn_radgraph_dir)")
  p.add_argument("--cn_radgraph_dir", default="",
                 help="workdir of a trained CN-RadGraph, for --clinical=cn_radgraph")
  return p


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI on `argv` (default sys.argv[1:]); returns the exit code (0 or 2)."""
  args = _parser().parse_args(argv)  # exits with 2 on bad flags
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                      stream=sys.stderr)
  try:
    rows = reports_io.read_prediction_lines(args.predictions)
  except reports_io.ReportsFileError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"error: cannot read the predictions file {args.predictions}: {e.strerror or e}",
          file=sys.stderr)
    return 2
  try:
    labeler = clinical.make_labeler(args.clinical, args.cn_radgraph_dir)
  except ValueError as e:  # also the extractor's CheckpointError
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = score_rows(rows, meteor=not args.no_meteor, labeler=labeler)
  out["clinical_scorer"] = args.clinical
  print(json.dumps(out, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
