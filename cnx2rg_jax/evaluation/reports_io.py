"""Reading and writing report files in JSON lines (UTF-8, one JSON object a line).

A predictions file holds one object per report: {"id": ..., "prediction": "...",
"reference": "..."}; other fields are allowed and kept. Every problem in it raises a
`ReportsFileError` that names the file and the 1-based line number.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

from cnx2rg_jax.text.cleaning import clean_report

PREDICTION_FIELDS = ("id", "prediction", "reference")


class ReportsFileError(ValueError):
  """A report file that cannot be used; the message names the file and the line."""


def _lines(path: str | os.PathLike):
  """Yields (1-based line number, decoded text) for each non-blank line of `path`.

  Bytes are decoded line by line (strict UTF-8; a BOM at the start of the file is dropped), so
  bad bytes are reported with their line. Raises ReportsFileError for undecodable bytes and
  OSError when the file cannot be read.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  for i, raw in enumerate(data.split(b"\n"), start=1):
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ReportsFileError(
          f"{path}, line {i}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1});"
          " report files must be UTF-8 encoded") from None
    if text.strip():
      yield i, text


def _objects(path: str | os.PathLike):
  """Yields (1-based line number, JSON object) for each non-blank line of `path`.

  Raises ReportsFileError naming the line for bad UTF-8, invalid JSON or a line that is not an
  object, and OSError when the file cannot be read.
  """
  for i, text in _lines(path):
    try:
      row = json.loads(text)
    except json.JSONDecodeError as e:
      raise ReportsFileError(f"{path}, line {i}: invalid JSON ({e.msg} at column {e.colno})"
                             ) from None
    if not isinstance(row, dict):
      raise ReportsFileError(
          f"{path}, line {i}: expected a JSON object, got {type(row).__name__}")
    yield i, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """Every non-blank line of `path` parsed as a JSON object, in file order.

  Raises ReportsFileError naming the line for bad UTF-8, invalid JSON or a line that is not an
  object, and OSError when the file cannot be read. An empty file gives [].
  """
  return [row for _, row in _objects(path)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
  """Writes `rows` to `path`, one compact JSON object a line, UTF-8, non-ASCII kept as is."""
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")


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
  for i, row in _objects(path):
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
