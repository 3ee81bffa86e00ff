"""Writing CN-RadGraph annotation files (the format of `annotations`), and the synthetic set.

`to_json_object` and `write_annotations` check every report as reading would (`AnnotationError`
naming the report), so a written file always reads back as the same reports. `synthetic_reports`
builds the synthetic CN-CXR's reports and exact graphs with the same checks, for training and
for `export_synthetic`.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import uuid
from typing import Iterable

from cnx2rg_jax.radgraph.annotations import (SPLITS, AnnotatedReport, AnnotationError, PathLike,
                                             canonical_report, first_overlap, is_int)
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text.report_graph import ENTITY_LABELS, RELATION_LABELS


def _check_report(report: AnnotatedReport, where: str) -> None:
  """Raises AnnotationError (prefixed with `where`) unless `report` would read back as is."""
  def fail(problem: str) -> AnnotationError:
    return AnnotationError(f"{where}: {problem}")

  if not isinstance(report.id, str) or not report.id:
    raise fail(f"the id {report.id!r} is not a non-empty string")
  if not isinstance(report.text, str) or not report.text.strip():
    raise fail(f"the text {report.text!r} is empty or not a string")
  if report.split not in ("",) + SPLITS:
    raise fail(f"split {report.split!r} is not one of {', '.join(SPLITS)} or \"\" (none)")
  n = len(report.text)
  for i, e in enumerate(report.entities):
    if not isinstance(e, dict) or not {"start", "end", "label", "keyword"} <= set(e):
      raise fail(f"entities[{i}] = {e!r} is not a dict with start, end, label and keyword")
    start, end, label, keyword = e["start"], e["end"], e["label"], e["keyword"]
    if not (is_int(start) and is_int(end) and 0 <= start < end <= n):
      raise fail(f"entities[{i}] span start={start!r}, end={end!r} are not integers with "
                 f"0 <= start < end <= {n} (the text's length; end is exclusive)")
    if not isinstance(label, str) or label not in ENTITY_LABELS:
      raise fail(f"entities[{i}] label {label!r} is not one of {', '.join(ENTITY_LABELS)}")
    if not isinstance(keyword, str) or (keyword and keyword not in kw.KEYWORD_INDEX):
      raise fail(f'entities[{i}] keyword {keyword!r} is neither a Table 1 keyword key nor ""')
  overlap = first_overlap((i, e["start"], e["end"]) for i, e in enumerate(report.entities))
  if overlap is not None:
    raise fail(f"the spans of entities[{overlap[0]}] and entities[{overlap[1]}] overlap; spans "
               "must not overlap")
  pairs: dict[tuple[int, int], int] = {}
  for j, r in enumerate(report.relations):
    if not isinstance(r, dict) or not {"head", "tail", "label"} <= set(r):
      raise fail(f"relations[{j}] = {r!r} is not a dict with head, tail and label")
    head, tail = r["head"], r["tail"]
    if not all(is_int(x) and 0 <= x < len(report.entities) for x in (head, tail)):
      raise fail(f"relations[{j}] head {head!r} or tail {tail!r} is not an index into the "
                 f"{len(report.entities)} entities")
    if not isinstance(r["label"], str) or r["label"] not in RELATION_LABELS:
      raise fail(f"relations[{j}] label {r['label']!r} is not one of "
                 f"{', '.join(RELATION_LABELS)}")
    if head == tail:
      raise fail(f"relations[{j}] links entities[{head}] to itself")
    if (head, tail) in pairs:
      raise fail(f"relations[{pairs[head, tail]}] and relations[{j}] both link "
                 f"entities[{head}] to entities[{tail}]; keep one relation per pair")
    pairs[head, tail] = j


def _report_object(report: AnnotatedReport) -> dict:
  held: dict[int, list[list[str]]] = {}
  for r in report.relations:
    held.setdefault(int(r["head"]), []).append([r["label"], str(int(r["tail"]) + 1)])
  entities = {}
  for i, e in enumerate(report.entities):
    start, end = int(e["start"]), int(e["end"])
    entities[str(i + 1)] = {"tokens": report.text[start:end], "label": e["label"],
                            "start_ix": start, "end_ix": end - 1, "relations": held.get(i, []),
                            "keyword": e["keyword"]}
  obj: dict = {"text": report.text}
  if report.split:
    obj["data_split"] = report.split
  obj["entities"] = entities
  return obj


def to_json_object(reports: Iterable[AnnotatedReport]) -> dict:
  """The annotation file's object for `reports`, in their order; entity ids are str(index + 1).

  Raises AnnotationError, naming the report, for anything that would not read back.
  """
  out: dict = {}
  for report in reports:
    where = f"cannot write report {report.id!r}"
    _check_report(report, where)
    if report.id in out:
      raise AnnotationError(f"{where}: the id appears more than once; report ids must be unique")
    out[report.id] = _report_object(report)
  if not out:
    raise AnnotationError("no reports to write: an annotation file holds at least one")
  return out


def write_annotations(path: PathLike, reports: Iterable[AnnotatedReport]) -> None:
  """Writes `reports` to `path` as UTF-8 JSON, atomically, creating parent folders.

  Raises AnnotationError for a report that would not read back (writing nothing), and OSError
  when the file cannot be written.
  """
  text = json.dumps(to_json_object(reports), ensure_ascii=False, indent=1) + "\n"
  path = pathlib.Path(path)
  above = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
  if above is not None and not above.is_dir():
    raise NotADirectoryError(errno.ENOTDIR, f"{above} is a file, not a folder", str(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  # The temporary file is created like an ordinary one (mode 0o666 less the umask), not mkstemp's
  # 0o600, so the written file's permissions are the usual ones.
  tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


# ----------------------------------------------------------------------------------------------
# The synthetic set.


def synthetic_reports(num_examples: int, seed: int = 0) -> list[AnnotatedReport]:
  """The reports and exact graphs of the synthetic CN-CXR set (`num_examples`, `seed`), with its
  ids and 7:1:2 splits, in index order. No images are drawn."""
  # Imported here: tfds_cncxr imports TensorFlow Datasets and registers the builder.
  from tfds_cncxr.synthetic import generate  # pylint: disable=import-outside-toplevel
  split_of = {int(i): name for name, idx in generate.split_indices(num_examples, seed).items()
              for i in idx}
  out = []
  for i in range(num_examples):
    report = generate.make_study(seed, i)[2]
    made = AnnotatedReport(generate.example_id(i), report.text, split_of[i],
                           tuple(report.entities), tuple(report.relations))
    _check_report(made, f"synthetic report {made.id!r} (seed {seed})")
    out.append(canonical_report(made.id, made.text, made.split,
                                list(enumerate(made.entities)),
                                [(r["head"], r["tail"], r["label"]) for r in made.relations]))
  return out
