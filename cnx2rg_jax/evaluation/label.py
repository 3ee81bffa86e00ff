"""Labels reports from the command line: keyword labels and positive pairs, one JSON per line.

  python -m cnx2rg_jax.evaluation.label --input=reports.jsonl

Each input line is a JSON object {"id": str|int, "report": str}. Each output line is
{"id", "keywords": {key: 1|0|-1}, "pairs": [[anatomy, lesion], ...]}, in input order. The whole
file is checked before anything is printed, so bad input prints no partial output: it gets one
paragraph on stderr naming the 1-based line and exit code 2.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags

from cnx2rg_jax.jsonl import JsonLinesError, read_objects
from cnx2rg_jax.text.labeler import label_report

_INPUT = flags.DEFINE_string("input", None, "JSON-lines file of {\"id\", \"report\"} objects.")


class InputError(JsonLinesError):
  """Bad input; the message names the file and line."""


def read_reports(path: str) -> list[tuple[object, str]]:
  """(id, report) of every non-blank line of a JSON-lines file (cnx2rg_jax/jsonl.py's rules), in
  order.

  Raises InputError naming the 1-based line for a line that is not UTF-8, not a JSON object, or
  lacks a str "report" or a str/int "id", for a repeated id, and for a file with no report.
  """
  out, seen = [], {}
  for n, obj in read_objects(path, InputError):
    where = f"{path}, line {n}"
    for field in ("id", "report"):
      if field not in obj:
        raise InputError(f"{where}: no \"{field}\" field")
    rid = obj["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
      raise InputError(f"{where}: \"id\" must be a string or an integer, got {rid!r}")
    if not isinstance(obj["report"], str):
      raise InputError(f"{where}: \"report\" must be a string, got {obj['report']!r:.60}")
    if rid in seen:
      raise InputError(f"{where}: repeats id {rid!r}, first seen on line {seen[rid]}")
    seen[rid] = n
    out.append((rid, obj["report"]))
  if not out:
    raise InputError(f"{path} is empty: expected one JSON object per line")
  return out


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _INPUT.value:
    raise app.UsageError("--input is required")
  try:
    reports = read_reports(_INPUT.value)
  except (InputError, OSError) as e:
    print(f"error: {e}. Nothing was labelled; fix the input and rerun.", file=sys.stderr)
    return 2
  # Ids may be Chinese and are printed unescaped: write UTF-8 whatever the locale says.
  sys.stdout.reconfigure(encoding="utf-8")
  for rid, report in reports:
    labels = label_report(report)
    print(json.dumps({"id": rid, "keywords": labels.keywords,
                      "pairs": [list(p) for p in labels.pairs]}, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  app.run(main)
