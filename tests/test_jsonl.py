"""The one JSON-lines reader (cnx2rg_jax/jsonl.py) and the readers built on it."""

import json

import pytest

from cnx2rg_jax import jsonl
from cnx2rg_jax.errors import UserError
from cnx2rg_jax.evaluation import devset, label, reports_io


def _write(tmp_path, data: bytes):
  path = tmp_path / "f.jsonl"
  path.write_bytes(data)
  return path


def test_bom_blank_lines_and_crlf(tmp_path):
  rows = [{"id": 1, "report": "心影不大。"}, {"id": "b", "report": "未见气胸"}]
  body = b"\r\n\n  \n".join(json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows)
  path = _write(tmp_path, b"\xef\xbb\xbf\n" + body + b"\r\n\n")
  # line numbers count every line, blank ones included
  assert list(jsonl.read_objects(path)) == [(2, rows[0]), (5, rows[1])]


@pytest.mark.parametrize("data, line, problem", [
    (b'{"a": 1}\n\n{"a": \xff}\n', 3, "not valid UTF-8 (byte 0xff at column 7)"),
    (b'{"a": 1}\n{"a": \n', 2, "not valid JSON"),
    (b'{"a": 1}\n["a"]\n', 2, "expected a JSON object, got list"),
    (b'7\n', 1, "expected a JSON object, got int"),
])
def test_bad_lines_are_named(tmp_path, data, line, problem):
  path = _write(tmp_path, data)
  with pytest.raises(jsonl.JsonLinesError) as e:
    list(jsonl.read_objects(path))
  assert str(e.value).startswith(f"{path}, line {line}: ") and problem in str(e.value)
  assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_the_callers_error_class(tmp_path):
  path = _write(tmp_path, b"[]\n")
  for error in (reports_io.ReportsFileError, label.InputError, devset.DevsetError):
    with pytest.raises(error, match="line 1: expected a JSON object"):
      list(jsonl.read_objects(path, error))
    assert issubclass(error, jsonl.JsonLinesError)


def test_write_then_read(tmp_path):
  rows = [{"id": "甲", "x": [1, 2]}, {"id": 2, "x": None}]
  path = tmp_path / "w.jsonl"
  jsonl.write_objects(path, rows)
  assert "甲" in path.read_text(encoding="utf-8")  # not \u-escaped
  assert [r for _, r in jsonl.read_objects(path)] == rows


def test_every_reader_takes_the_same_file(tmp_path):
  """One behaviour: a BOM and blank lines are fine for all three file kinds."""
  row = {"id": 1, "report": "心影不大。", "prediction": "心影不大。", "reference": "心影不大。",
         "keywords": {"heart": 0}, "pairs": []}
  path = _write(tmp_path, b"\xef\xbb\xbf\n\n" + json.dumps(row, ensure_ascii=False).encode()
                + b"\n\n")
  assert reports_io.read_prediction_lines(path) == [row]
  assert label.read_reports(str(path)) == [(1, "心影不大。")]
  assert [r["id"] for r in devset.read_devset(str(path))] == [1]
  assert reports_io.read_jsonl(path) == [row]
