"""CN-RadGraph annotation files: RadGraph's JSON layout (Jain et al. 2021), at character level.

A file is one JSON object keyed by report id:

    {"syn000005": {
       "text": "双肺纹理走行自然，右下肺野见斑片状影。",
       "data_split": "train",
       "entities": {
         "1": {"tokens": "双肺", "label": "Anatomy", "start_ix": 0, "end_ix": 1,
               "relations": [], "keyword": "lung"},
         "2": {"tokens": "纹理", "label": "NO", "start_ix": 2, "end_ix": 3,
               "relations": [["modify", "3"]], "keyword": "texture"},
         "3": {"tokens": "走行自然", "label": "DNO", "start_ix": 4, "end_ix": 7,
               "relations": [["located_at", "1"]], "keyword": ""},
         ...}}}

As in RadGraph, entities are keyed by id strings ("1", "2", ...); start_ix and end_ix are both
inclusive, here indices of characters of "text", and "tokens" repeats text[start_ix:end_ix + 1];
a relation [label, target id] is held by its head entity. Labels are `report_graph`'s
ENTITY_LABELS and RELATION_LABELS. "data_split" is train, val or test (RadGraph's "dev" reads as
val), or left out of every report (see `with_splits`); RadGraph's "data_source" is allowed and
ignored. "keyword" (a Table 1 keyword key, or "") may be left out, and is then read off the span
by `report_graph.span_keyword`; a written file always has it. The extractor tags characters, so
spans must not overlap, and two entities are linked by at most one relation.

In memory a report is an `AnnotatedReport` whose graph is in `report_graph`'s form: entities
{"start", "end" (exclusive), "label", "keyword"} sorted by span, and relations {"head", "tail",
"label"} indexing them. Reading checks all of the above and raises `AnnotationError` naming the
file, the report and the entity; writing (`annotation_writer`) checks the same, so a written file
always reads back. This module holds the format's types and reading; `annotation_writer` holds
writing and the synthetic set's reports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Container, Iterable, Optional, Sequence, Union

import numpy as np

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.text.report_graph import ENTITY_LABELS, RELATION_LABELS
from tfds_cncxr import splits

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "val": "val", "dev": "val", "test": "test"}
_REPORT_KEYS = ("text", "data_split", "entities", "data_source")
_ENTITY_KEYS = ("tokens", "label", "start_ix", "end_ix", "relations", "keyword")
_EXAMPLE_RELATION = '["located_at", "1"]'

PathLike = Union[str, os.PathLike]


class AnnotationError(UserError):
  """An annotation file or report is unusable; the message names the file, report and entity."""


@dataclasses.dataclass(frozen=True)
class AnnotatedReport:
  """One report and its CN-RadGraph graph, in `report_graph`'s form."""
  id: str
  text: str
  split: str  # one of SPLITS, or "" when the file gave none
  entities: tuple  # of {"start", "end", "label", "keyword"}, end exclusive, sorted by (start, end)
  relations: tuple  # of {"head", "tail", "label"}, indices into entities, sorted


def graph_of(report: AnnotatedReport) -> tuple[list[dict], list[dict]]:
  """(entities, relations) of `report` as plain lists of copied dicts."""
  return [dict(e) for e in report.entities], [dict(r) for r in report.relations]


# ----------------------------------------------------------------------------------------------
# Checks that reading and writing (`annotation_writer`) share.


def is_int(v: Any) -> bool:
  """Whether `v` is an integer (a NumPy one included) and not a boolean."""
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def first_overlap(spans: Iterable[tuple[Any, int, int]]) -> Optional[tuple[Any, Any]]:
  """Keys of two overlapping spans among (key, start, end exclusive), or None."""
  widest = None  # of the spans so far, the one that reaches furthest
  for span in sorted(spans, key=lambda s: (s[1], s[2])):
    if widest is not None and span[1] < widest[2]:
      return widest[0], span[0]
    if widest is None or span[2] > widest[2]:
      widest = span
  return None


def canonical_report(report_id: str, text: str, split: str,
                     entities: Sequence[tuple[Any, dict]],
                     relations: Iterable[tuple[Any, Any, str]]) -> AnnotatedReport:
  """An AnnotatedReport from checked (key, entity) pairs and (head key, tail key, label) triples:
  entities sorted by span, relations remapped to the sorted order and sorted."""
  order = sorted(range(len(entities)),
                 key=lambda i: (int(entities[i][1]["start"]), int(entities[i][1]["end"])))
  index = {entities[i][0]: n for n, i in enumerate(order)}
  ents = tuple({"start": int(e["start"]), "end": int(e["end"]), "label": e["label"],
                "keyword": e["keyword"]} for e in (entities[i][1] for i in order))
  rels = sorted(({"head": index[h], "tail": index[t], "label": label}
                 for h, t, label in relations), key=lambda r: (r["head"], r["tail"], r["label"]))
  return AnnotatedReport(report_id, text, split, ents, tuple(rels))


# ----------------------------------------------------------------------------------------------
# Reading.


class _Object(dict):
  """A parsed JSON object that remembers the first key it was given more than once."""
  duplicate: Optional[str] = None


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
  obj = _Object()
  for key, value in pairs:
    if key in obj and obj.duplicate is None:
      obj.duplicate = key
    obj[key] = value
  return obj


def _kind(value: Any) -> str:
  """`value`'s JSON type, for messages."""
  if value is None:
    return "null"
  for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
                      ((list, tuple), "an array"), (dict, "an object")):
    if isinstance(value, types):
      return name
  return type(value).__name__


def _error(source: str, report_id: Any = None, entity_id: Any = None,
           problem: str = "") -> AnnotationError:
  where = (source + ("" if report_id is None else f", report {report_id!r}")
           + ("" if entity_id is None else f", entity {entity_id!r}"))
  return AnnotationError(f"{where}: {problem}")


def _show(value: Any) -> str:
  try:
    return json.dumps(value, ensure_ascii=False)
  except (TypeError, ValueError):
    return repr(value)


def _span_text(text: str, entity: dict) -> str:
  """An entity's span for messages: its text and inclusive indices, as the file gives them."""
  start, end = entity["start"], entity["end"]
  return f"{text[start:end]!r} (start_ix={start}, end_ix={end - 1})"


def _check_keys(obj: dict, allowed: Sequence[str],
                fail: Callable[[str], AnnotationError]) -> None:
  """Raises fail(problem) for a key given twice in `obj` or a key outside `allowed`."""
  if getattr(obj, "duplicate", None) is not None:
    raise fail(f"key {obj.duplicate!r} appears more than once; give it once")
  extra = sorted(set(obj) - set(allowed))
  if extra:
    raise fail(f"unknown key(s) {extra}; allowed: {', '.join(allowed)}")


def _read_entity(text: str, eid: str, ent: Any, fail: Callable[..., AnnotationError]
                 ) -> tuple[dict, Any]:
  """(internal entity, its raw "relations") of one file entity."""
  if not isinstance(ent, dict):
    raise fail(eid, f"must be an object with tokens, label, start_ix and end_ix, not {_kind(ent)}")
  _check_keys(ent, _ENTITY_KEYS, lambda problem: fail(eid, problem))
  start, end = ent.get("start_ix"), ent.get("end_ix")
  if not (is_int(start) and is_int(end)):
    raise fail(eid, f"start_ix {start!r} and end_ix {end!r} must both be integers: the "
                    'indices of the first and last characters of the span in "text"')
  if not 0 <= start <= end < len(text):
    raise fail(eid, f"span start_ix={start}, end_ix={end} is not within the text; expected "
                    f"0 <= start_ix <= end_ix < {len(text)} (the text's length; both ends are "
                    "inclusive)")
  span = text[start:end + 1]
  if "tokens" not in ent:
    raise fail(eid, f'has no "tokens"; expected text[{start}:{end + 1}] = {span!r}')
  if ent["tokens"] != span:
    raise fail(eid, f'"tokens" {ent["tokens"]!r} differs from text[{start}:{end + 1}] = '
                    f"{span!r} (start_ix and end_ix are both inclusive)")
  label = ent.get("label")
  if not isinstance(label, str) or label not in ENTITY_LABELS:
    raise fail(eid, f"label {label!r} is not one of {', '.join(ENTITY_LABELS)}")
  if "keyword" in ent:
    keyword = ent["keyword"]
    if not isinstance(keyword, str) or (keyword and keyword not in kw.KEYWORD_INDEX):
      raise fail(eid, f"keyword {keyword!r} is neither a Table 1 keyword key (see "
                      'cnx2rg_jax.text.keywords) nor ""; leave it out to infer it from the span')
  else:
    keyword = report_graph.span_keyword(span)
  entity = {"start": start, "end": end + 1, "label": label, "keyword": keyword}
  return entity, ent.get("relations", [])


def _read_relations(eid: str, rels: Any, entity_ids: Container[str],
                    fail: Callable[..., AnnotationError]) -> list[tuple[str, str, str]]:
  """(head id, tail id, label) of one file entity's "relations"."""
  if not isinstance(rels, list):
    raise fail(eid, '"relations" must be an array of [label, target entity id] pairs, like '
                    f"[{_EXAMPLE_RELATION}], not {_kind(rels)}")
  tails: dict[str, str] = {}  # tail id -> label
  for rel in rels:
    shown = _show(rel)
    if not (isinstance(rel, (list, tuple)) and len(rel) == 2
            and all(isinstance(x, str) for x in rel)):
      raise fail(eid, f"relation {shown} is not a [label, target entity id] pair of strings, "
                      f"like {_EXAMPLE_RELATION}")
    label, tail = rel
    if label not in RELATION_LABELS:
      raise fail(eid, f"relation {shown}: label {label!r} is not one of "
                      f"{', '.join(RELATION_LABELS)}")
    if tail not in entity_ids:
      raise fail(eid, f"relation {shown}: there is no entity {tail!r} in this report")
    if tail == eid:
      raise fail(eid, f"relation {shown} links the entity to itself")
    if tail in tails:
      raise fail(eid, f"relations {_show([tails[tail], tail])} and "
                      f"{shown} both link entity {eid!r} to {tail!r}; keep one relation per pair")
    tails[tail] = label
  return [(eid, tail, label) for tail, label in tails.items()]


def _read_report(source: str, report_id: Any, value: Any) -> AnnotatedReport:
  def fail(entity_id: Any, problem: str) -> AnnotationError:
    return _error(source, report_id, entity_id, problem)

  if not isinstance(report_id, str) or not report_id:
    raise fail(None, "a report id must be a non-empty string")
  if not isinstance(value, dict):
    raise fail(None, f'must be an object with "text" and "entities", not {_kind(value)}')
  _check_keys(value, _REPORT_KEYS, lambda problem: fail(None, problem))
  text = value.get("text")
  if not isinstance(text, str):
    raise fail(None, f'"text" must be the report\'s text, a string, not {_kind(text)}')
  if not text.strip():
    raise fail(None, '"text" is empty; a report needs its text')
  split = ""
  if "data_split" in value:
    given = value["data_split"]
    split = _SPLIT_NAMES.get(given, "") if isinstance(given, str) else ""
    if not split:
      raise fail(None, f"data_split {given!r} is not train, val (or dev) or test; leave it "
                       "out of every report to split them 7:1:2 by id")
  if "entities" not in value:
    raise fail(None, 'has no "entities"; give {} for a report without entities')
  ents = value["entities"]
  if not isinstance(ents, dict):
    raise fail(None, f'"entities" must be an object keyed by entity id, not {_kind(ents)}')
  if getattr(ents, "duplicate", None) is not None:
    raise fail(ents.duplicate, "this entity id appears more than once in the report; "
                               "entity ids must be unique")
  entities, raw_relations = [], []
  for eid, ent in ents.items():
    entity, rels = _read_entity(text, eid, ent, fail)
    entities.append((eid, entity))
    raw_relations.append((eid, rels))
  overlap = first_overlap((eid, e["start"], e["end"]) for eid, e in entities)
  if overlap is not None:
    (a, b), by_id = overlap, dict(entities)
    raise fail(a, f"its span {_span_text(text, by_id[a])} overlaps that of entity {b!r}, "
                  f"{_span_text(text, by_id[b])}; spans must not overlap (the extractor tags "
                  "each character once)")
  relations = [r for eid, rels in raw_relations for r in _read_relations(eid, rels, ents, fail)]
  return canonical_report(report_id, text, split, entities, relations)


def from_json_object(obj: Any, source: str = "<object>") -> list[AnnotatedReport]:
  """The reports of a parsed annotation file, in its order; `source` names it in errors."""
  if not isinstance(obj, dict):
    raise AnnotationError(f"{source}: the top level must be an object keyed by report id, "
                          f"not {_kind(obj)}")
  if getattr(obj, "duplicate", None) is not None:
    raise _error(source, obj.duplicate, None, "this report id appears more than once in the "
                                              "file; report ids must be unique")
  if not obj:
    raise AnnotationError(f'{source}: holds no reports; expected {{"<report id>": {{"text": ..., '
                          '"entities": {...}}, ...}')
  return [_read_report(source, report_id, value) for report_id, value in obj.items()]


def read_annotations(path: PathLike) -> list[AnnotatedReport]:
  """The reports of the annotation file at `path`, in its order; AnnotationError if unusable."""
  source = str(path)
  try:
    data = pathlib.Path(path).read_bytes()
  except FileNotFoundError:
    raise AnnotationError(f"{source}: no such file") from None
  except IsADirectoryError:
    raise AnnotationError(f"{source}: is a folder, not an annotation file") from None
  except OSError as e:
    raise AnnotationError(f"{source}: cannot be read ({e.strerror or e})") from None
  bom = len(data) >= 3 and data[:3] == b"\xef\xbb\xbf"  # tolerated
  try:
    text = data[3 if bom else 0:].decode("utf-8")
  except UnicodeDecodeError as e:
    raise AnnotationError(f"{source}: not UTF-8 (byte {e.start + 3 * bom} cannot be decoded); "
                          "re-save it as UTF-8") from None
  if not text.strip():
    raise AnnotationError(f"{source}: the file is empty; expected a JSON object keyed by "
                          "report id")
  try:
    obj = json.loads(text, object_pairs_hook=_object_pairs)
  except json.JSONDecodeError as e:
    raise AnnotationError(f"{source}: not valid JSON: {e.msg} at line {e.lineno}, column "
                          f"{e.colno}") from None
  return from_json_object(obj, source)


# ----------------------------------------------------------------------------------------------
# Splits.


def with_splits(reports: Iterable[AnnotatedReport], seed: int) -> list[AnnotatedReport]:
  """`reports` (in their order), each with a split.

  When every report has a split they are returned unchanged; when none has, they are split 7:1:2
  by id with `seed`, as tfds_cncxr.release splits a release without splits (so the split does
  not depend on the reports' order). Some with and some without is an AnnotationError.
  """
  reports = list(reports)
  missing = [r for r in reports if not r.split]
  if not missing:
    return reports
  if len(missing) < len(reports):
    raise AnnotationError(
        f"report {missing[0].id!r} has no data_split, while {len(reports) - len(missing)} "
        "other report(s) have one; give every report a split, or none to split them 7:1:2 by id")
  seen: set[str] = set()
  for r in reports:
    if r.id in seen:
      raise AnnotationError(f"report id {r.id!r} appears more than once; report ids must be "
                            "unique to split by id")
    seen.add(r.id)
  split_of = splits.split_by_id([r.id for r in reports], seed)
  return [dataclasses.replace(r, split=split_of[r.id]) for r in reports]
