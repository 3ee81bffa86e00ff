"""CN-RadGraph annotation files: known answers, round trips, every validation error on read,
splits."""

from __future__ import annotations

import copy
import dataclasses
import json
import random

import pytest

from cnx2rg_jax.radgraph import annotation_writer as aw
from cnx2rg_jax.radgraph import annotations as ann
from cnx2rg_jax.text import report_graph
from tests.helpers.radgraph_annotations import HAND, HAND_CANONICAL, TEXT
from tfds_cncxr import cncxr, splits


def _write(tmp_path, obj, name="a.json"):
  path = tmp_path / name
  path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
  return path


# ------------------------------------------------------------------------------------------------
# Known answers and round trips.


@pytest.mark.parametrize("span, keyword", [
    ("右侧胸腔积液", ""),  # two keywords (chest, effusion): none
    ("右侧胸腔", "chest"),
    ("斑片状影", "shadow"),
    ("走行自然", ""),  # no lexicon term
    ("积液", "effusion"),
])
def test_span_keyword(span, keyword):
  assert report_graph.span_keyword(span) == keyword


def test_builder_keyword_uses_span_keyword():
  entity = {"start": 0, "end": 4, "label": "Anatomy"}
  assert cncxr._with_keyword(entity, TEXT) == {**entity, "keyword": "chest"}


def test_hand_written_known_answer(tmp_path):
  r1, r0 = ann.read_annotations(_write(tmp_path, HAND))
  assert (r1.id, r1.text, r1.split) == ("r1", TEXT, "val")
  assert r1.entities == (
      {"start": 0, "end": 4, "label": "Anatomy", "keyword": "chest"},
      {"start": 4, "end": 6, "label": "DPO", "keyword": "effusion"},
      {"start": 7, "end": 9, "label": "Anatomy", "keyword": "lung"},
      {"start": 9, "end": 11, "label": "NO", "keyword": "texture"},
      {"start": 11, "end": 13, "label": "DPO", "keyword": ""},
  )
  assert r1.relations == (
      {"head": 1, "tail": 0, "label": "located_at"},
      {"head": 3, "tail": 4, "label": "modify"},
      {"head": 4, "tail": 2, "label": "located_at"},
  )
  assert [TEXT[e["start"]:e["end"]] for e in r1.entities] == ["右侧胸腔", "积液", "双肺", "纹理",
                                                              "增多"]
  assert (r0.id, r0.split, r0.entities, r0.relations) == ("r0", "test", (), ())
  entities, relations = ann.graph_of(r1)
  assert entities == list(r1.entities) and relations == list(r1.relations)
  entities[0]["label"] = "DPO"
  assert r1.entities[0]["label"] == "Anatomy"  # graph_of copies


def test_tiny_known_answer():
  obj = {"x": {"text": "右侧胸腔积液。", "entities": {
      "a": {"tokens": "积液", "label": "DPO", "start_ix": 4, "end_ix": 5,
            "relations": [["located_at", "b"]]},
      "b": {"tokens": "右侧胸腔", "label": "Anatomy", "start_ix": 0, "end_ix": 3}}}}
  (r,) = ann.from_json_object(obj)
  assert r.split == ""
  assert [(e["start"], e["end"], e["label"]) for e in r.entities] == [(0, 4, "Anatomy"),
                                                                     (4, 6, "DPO")]
  assert r.relations == ({"head": 1, "tail": 0, "label": "located_at"},)
  assert "data_split" not in aw.to_json_object([r])["x"]


def test_json_object_round_trip_canonicalises():
  reports = ann.from_json_object(HAND)
  assert aw.to_json_object(reports) == HAND_CANONICAL
  assert list(aw.to_json_object(reports)) == ["r1", "r0"]  # the file's order
  assert ann.from_json_object(HAND_CANONICAL) == reports
  assert aw.to_json_object(ann.from_json_object(HAND_CANONICAL)) == HAND_CANONICAL
  # Without "keyword" anywhere, the same keywords are inferred except where HAND overrides one.
  bare = copy.deepcopy(HAND_CANONICAL)
  for e in bare["r1"]["entities"].values():
    del e["keyword"]
  inferred = aw.to_json_object(ann.from_json_object(bare))
  assert inferred["r1"]["entities"]["5"]["keyword"] == "enhanced"
  inferred["r1"]["entities"]["5"]["keyword"] = ""
  assert inferred == HAND_CANONICAL


def test_bom_is_tolerated(tmp_path):
  path = tmp_path / "bom.json"
  path.write_bytes(b"\xef\xbb\xbf" + json.dumps(HAND, ensure_ascii=False).encode("utf-8"))
  assert ann.read_annotations(path) == ann.from_json_object(HAND)


# ------------------------------------------------------------------------------------------------
# Validation on read.


def _set(path, value):
  """A mutation of HAND_CANONICAL: sets (or with value=_DEL deletes) the key at `path`."""
  def mutate(obj):
    node = obj
    for key in path[:-1]:
      node = node[key]
    if value is _DEL:
      del node[path[-1]]
    else:
      node[path[-1]] = value
  return mutate


_DEL = object()
_E = ("r1", "entities")

# (name, mutation of a copy of HAND_CANONICAL, report id, entity id or None, hint)
_BAD_OBJECTS = [
    ("report_not_object", _set(("r1",), "text"), "r1", None, "must be an object"),
    ("text_missing", _set(("r1", "text"), _DEL), "r1", None, '"text"'),
    ("text_not_string", _set(("r1", "text"), 5), "r1", None, "a number"),
    ("text_empty", _set(("r0", "text"), ""), "r0", None, "empty"),
    ("unknown_report_key", _set(("r1", "labeler_1"), {}), "r1", None, "unknown key"),
    ("bad_split", _set(("r1", "data_split"), "training"), "r1", None, "data_split 'training'"),
    ("split_not_string", _set(("r1", "data_split"), 1), "r1", None, "data_split 1"),
    ("entities_missing", _set(("r0", "entities"), _DEL), "r0", None, '"entities"'),
    ("entities_not_object", _set(("r0", "entities"), []), "r0", None, "keyed by entity id"),
    ("entity_not_object", _set(_E + ("2",), ["积液"]), "r1", "2", "must be an object"),
    ("unknown_entity_key", _set(_E + ("2", "type"), "x"), "r1", "2", "unknown key"),
    ("start_not_int", _set(_E + ("2", "start_ix"), "4"), "r1", "2", "integers"),
    ("start_bool", _set(_E + ("1", "start_ix"), False), "r1", "1", "integers"),
    ("end_float", _set(_E + ("2", "end_ix"), 5.0), "r1", "2", "integers"),
    ("end_missing", _set(_E + ("2", "end_ix"), _DEL), "r1", "2", "integers"),
    ("start_after_end", _set(_E + ("2", "start_ix"), 6), "r1", "2", "0 <= start_ix <= end_ix"),
    ("end_past_text", _set(_E + ("5", "end_ix"), 14), "r1", "5", "< 14"),
    ("start_negative", _set(_E + ("1", "start_ix"), -1), "r1", "1", "not within the text"),
    ("tokens_missing", _set(_E + ("2", "tokens"), _DEL), "r1", "2", "'积液'"),
    ("tokens_differ", _set(_E + ("2", "tokens"), "积"), "r1", "2", "'积' differs from"),
    ("bad_label", _set(_E + ("2", "label"), "OBS-DP"), "r1", "2", "label 'OBS-DP'"),
    ("bad_keyword", _set(_E + ("2", "keyword"), "fluid"), "r1", "2", "keyword 'fluid'"),
    ("keyword_not_string", _set(_E + ("2", "keyword"), None), "r1", "2", "keyword None"),
    ("relations_not_list", _set(_E + ("2", "relations"), {"located_at": "1"}), "r1", "2",
     '"relations" must be an array'),
    ("relation_not_pair", _set(_E + ("2", "relations"), [["located_at"]]), "r1", "2",
     "not a [label, target entity id] pair"),
    ("relation_int_target", _set(_E + ("2", "relations"), [["located_at", 1]]), "r1", "2",
     "pair of strings"),
    ("relation_bad_label", _set(_E + ("2", "relations"), [["suggestive_of", "1"]]), "r1", "2",
     "label 'suggestive_of'"),
    ("relation_unknown_target", _set(_E + ("2", "relations"), [["located_at", "9"]]), "r1", "2",
     "no entity '9'"),
    ("self_relation", _set(_E + ("2", "relations"), [["modify", "2"]]), "r1", "2", "itself"),
    ("same_pair_twice", _set(_E + ("2", "relations"), [["located_at", "1"]] * 2), "r1", "2",
     "both link entity '2' to '1'"),
    ("same_pair_two_labels",
     _set(_E + ("2", "relations"), [["located_at", "1"], ["modify", "1"]]), "r1", "2",
     '["located_at", "1"] and ["modify", "1"]'),
]


@pytest.mark.parametrize("mutate, report_id, entity_id, hint",
                         [case[1:] for case in _BAD_OBJECTS], ids=[c[0] for c in _BAD_OBJECTS])
def test_bad_report_or_entity(tmp_path, mutate, report_id, entity_id, hint):
  obj = copy.deepcopy(HAND_CANONICAL)
  mutate(obj)
  path = _write(tmp_path, obj, "bad.json")
  with pytest.raises(ann.AnnotationError) as e:
    ann.read_annotations(path)
  message = str(e.value)
  assert str(path) in message and f"report {report_id!r}" in message and hint in message
  if entity_id is not None:
    assert f"entity {entity_id!r}" in message


def test_overlap_names_both_entities(tmp_path):
  obj = copy.deepcopy(HAND_CANONICAL)
  obj["r1"]["entities"]["6"] = {"tokens": "胸腔积", "label": "Anatomy", "start_ix": 2,
                                "end_ix": 4, "relations": []}
  path = _write(tmp_path, obj)
  with pytest.raises(ann.AnnotationError, match="overlap") as e:
    ann.read_annotations(path)
  assert "report 'r1'" in str(e.value) and "'6'" in str(e.value) and "'1'" in str(e.value)
  # A span identical to another's overlaps it too; adjacent spans do not.
  obj["r1"]["entities"]["6"] = dict(obj["r1"]["entities"]["2"], relations=[])
  with pytest.raises(ann.AnnotationError, match=r"entity '2'.*overlaps.*entity '6'"):
    ann.from_json_object(obj)


_DUPLICATE_REPORT = ('{"r1": {"text": "积液", "entities": {}}, '
                     '"r1": {"text": "x", "entities": {}}}')
_DUPLICATE_ENTITY = ('{"r1": {"text": "积液", "entities": {'
                     '"1": {"tokens": "积液", "label": "DPO", "start_ix": 0, "end_ix": 1}, '
                     '"1": {"tokens": "积", "label": "DPO", "start_ix": 0, "end_ix": 0}}}}')
_DUPLICATE_KEY = '{"r1": {"text": "积液", "text": "积液", "entities": {}}}'

# (name, file bytes or None for no file, hints the message must contain)
_BAD_FILES = [
    ("missing", None, ["no such file"]),
    ("not_utf8", b'{"r1": {"text": "\xff\xfe", "entities": {}}}', ["not UTF-8", "byte 17"]),
    ("bad_json", '{"r1": {"text": "x",\n "entities": }}'.encode(), ["line 2, column 14", "Expecting value"]),
    ("top_level_array", b"[]", ["top level", "an array"]),
    ("empty", b"", ["empty"]),
    ("blank", b" \n", ["empty"]),
    ("no_reports", b"{}", ["no reports"]),
    ("duplicate_report_id", _DUPLICATE_REPORT.encode(), ["report 'r1'", "more than once"]),
    ("duplicate_entity_id", _DUPLICATE_ENTITY.encode(),
     ["report 'r1'", "entity '1'", "more than once"]),
    ("duplicate_key", _DUPLICATE_KEY.encode(), ["report 'r1'", "'text' appears more than once"]),
]


@pytest.mark.parametrize("data, hints", [c[1:] for c in _BAD_FILES],
                         ids=[c[0] for c in _BAD_FILES])
def test_bad_file(tmp_path, data, hints):
  path = tmp_path / "bad.json"
  if data is not None:
    path.write_bytes(data)
  with pytest.raises(ann.AnnotationError) as e:
    ann.read_annotations(path)
  assert str(path) in str(e.value)
  for hint in hints:
    assert hint in str(e.value)


def test_folder_is_not_a_file(tmp_path):
  with pytest.raises(ann.AnnotationError, match="folder"):
    ann.read_annotations(tmp_path)


def test_from_json_object_names_its_source():
  with pytest.raises(ann.AnnotationError, match=r"^<object>: the top level"):
    ann.from_json_object([])
  with pytest.raises(ann.AnnotationError, match=r"^mine, report 'r0'"):
    ann.from_json_object({"r0": {"text": "", "entities": {}}}, source="mine")


def test_optional_parts_are_optional():
  obj = {"r": {"text": "积液", "data_source": "MIMIC-CXR", "entities": {
      "7": {"tokens": "积液", "label": "DPO", "start_ix": 0, "end_ix": 1}}}}
  (r,) = ann.from_json_object(obj)
  assert r.entities == ({"start": 0, "end": 2, "label": "DPO", "keyword": "effusion"},)
  assert r.relations == () and r.split == ""


# ------------------------------------------------------------------------------------------------
# Splits.


def _unsplit(n):
  return [ann.AnnotatedReport(f"r{i:03d}", "积液", "", (), ()) for i in range(n)]


def test_with_splits_all_given_is_unchanged():
  reports = ann.from_json_object(HAND)
  out = ann.with_splits(reports, seed=3)
  assert out == reports and all(a is b for a, b in zip(out, reports))


def test_with_splits_none_given_is_7_1_2_by_id():
  reports = _unsplit(50)
  out = ann.with_splits(reports, seed=4)
  assert [r.id for r in out] == [r.id for r in reports]
  assert [sum(r.split == s for r in out) for s in ann.SPLITS] == [35, 5, 10]
  split_of = {r.id: r.split for r in out}
  assert split_of == splits.split_by_id([r.id for r in reports], 4)  # the release's rule
  shuffled = list(reports)
  random.Random(0).shuffle(shuffled)
  assert {r.id: r.split for r in ann.with_splits(shuffled, seed=4)} == split_of
  assert {r.id: r.split for r in ann.with_splits(reports, seed=5)} != split_of


def test_with_splits_some_given_is_an_error():
  reports = _unsplit(4)
  reports[0] = dataclasses.replace(reports[0], split="train")
  reports[2] = dataclasses.replace(reports[2], split="test")
  with pytest.raises(ann.AnnotationError, match="report 'r001' has no data_split"):
    ann.with_splits(reports, seed=0)


def test_with_splits_duplicate_ids_is_an_error():
  with pytest.raises(ann.AnnotationError, match="'r000' appears more than once"):
    ann.with_splits(_unsplit(2) + _unsplit(1), seed=0)
