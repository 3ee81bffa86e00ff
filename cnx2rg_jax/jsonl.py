"""The project's one JSON-lines reader and writer (UTF-8, one JSON object a line).

Reading rules, for every JSON-lines file the project takes (predictions, reports to label, the
hand-labelled development set):
- the file is strict UTF-8, read as bytes and decoded line by line; a byte-order mark at its
  start is dropped;
- lines are split at "\\n" (a "\\r" before it is whitespace); blank lines are skipped;
- every other line must be one JSON object.
A problem raises the caller's error class (a `UserError`) with a message
"<file>, line <n>: <problem>" (n counts from 1, blank lines included); an unreadable file
raises OSError. What a line must hold beyond being an object is the caller's rule.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator

from cnx2rg_jax.errors import UserError


class JsonLinesError(UserError):
  """A JSON-lines file that breaks the reading rules; the message names the file and line."""


def read_objects(path: str | os.PathLike,
                 error: type[Exception] = JsonLinesError) -> Iterator[tuple[int, dict]]:
  """Yields (1-based line number, object) for each non-blank line of `path`, in file order;
  raises `error` naming the line for bad UTF-8, invalid JSON or a line that is not an object."""
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  for i, raw in enumerate(data.split(b"\n"), start=1):
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise error(f"{path}, line {i}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                  f"{e.start + 1}); the file must be UTF-8 encoded") from None
    if not text.strip():
      continue
    try:
      row = json.loads(text)
    except json.JSONDecodeError as e:
      raise error(f"{path}, line {i}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
      raise error(f"{path}, line {i}: expected a JSON object, got {type(row).__name__}")
    yield i, row


def write_objects(path: str | os.PathLike, rows: Iterable[dict]) -> None:
  """Writes `rows` to `path`, one compact JSON object a line, UTF-8, non-ASCII kept as is."""
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
