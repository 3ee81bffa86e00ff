"""Report files in JSON lines, read and written by cnx2rg_jax/jsonl.py's rules.

A predictions file holds one object per report: {"id": ..., "prediction": "...",
"reference": "..."}; other fields are allowed and kept. Every problem in it raises a
`ReportsFileError` that names the file and the 1-based line number.
"""

from __future__ import annotations

import json
import os

from cnx2rg_jax.jsonl import JsonLinesError, read_objects, write_objects
from cnx2rg_jax.text.cleaning import clean_report

PREDICTION_FIELDS = ("id", "prediction", "reference")


class ReportsFileError(JsonLinesError):
  """A report file that cannot be used; the message names the file and the line."""


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """Every non-blank line of `path` as a JSON object, in file order (cnx2rg_jax/jsonl.py's rules;
  ReportsFileError names the line). An empty file gives []."""
  return [row for _, row in read_objects(path, ReportsFileError)]


write_jsonl = write_objects


def _check_string(path, i: int, row: dict, field: str) -> None:
  value = row[field]
  if not isinstance(value, str):
    raise ReportsFileError(f"{path}, line {i}: field {field!r} must be a string, got "
                           f"{type(value).__name__} ({json.dumps(value, ensure_ascii=False):.60})")
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    raise ReportsFileError(f"{path}, line {i}: field {field!r} holds an unpaired surrogate "
                           "escape (\\ud800-\\udfff), which is not text") from None


def read_prediction_lines(path: str | os.PathLike) -> list[dict]:
  """The reports of a predictions file: [{"id", "prediction", "reference", ...}], file order.

  Promises, for every returned row: "id" is a string or an integer (not a bool) and unique in
  the file (compared as text, so 7 and "7" clash); "prediction" and "reference" are strings;
  the reference is not empty after `clean_report`. An empty prediction ("") is valid. Blank
  lines are skipped. Raises ReportsFileError naming the file and the 1-based line (both lines
  for a duplicate id) for bad UTF-8, invalid JSON, a non-object line, a missing field, a field
  of the wrong type, a duplicate id, or an empty reference; and for a file without any report.
  Raises OSError when the file cannot be read.
  """
  rows = []
  seen: dict[str, int] = {}
  for i, row in read_objects(path, ReportsFileError):
    missing = [f for f in PREDICTION_FIELDS if f not in row]
    if missing:
      raise ReportsFileError(f"{path}, line {i}: missing field(s) {missing}; every line needs "
                             f"{list(PREDICTION_FIELDS)}")
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
      raise ReportsFileError(f"{path}, line {i}: field 'id' must be a string or an integer, "
                             f"got {type(rid).__name__}")
    _check_string(path, i, row, "prediction")
    _check_string(path, i, row, "reference")
    if not clean_report(row["reference"]):
      raise ReportsFileError(f"{path}, line {i}: the reference of id {rid!r} is empty (after "
                             "cleaning); every report needs a reference")
    key = str(rid)
    if key in seen:
      raise ReportsFileError(
          f"{path}, line {i}: duplicate id {rid!r}, already used on line {seen[key]}")
    seen[key] = i
    rows.append(row)
  if not rows:
    raise ReportsFileError(f"{path}: no reports (the file is empty or has only blank lines)")
  return rows
