"""CN-RadGraph annotation files: round trips, known answers, every validation error, the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import random

import numpy as np
import pytest

from cnx2rg_jax.radgraph import annotations as ann
from cnx2rg_jax.radgraph import export_synthetic
from cnx2rg_jax.text import report_graph
from tfds_cncxr import cncxr, splits
from tfds_cncxr.synthetic import generate

TEXT = "右侧胸腔积液，双肺纹理增多。"
# 右0 侧1 胸2 腔3 积4 液5 ，6 双7 肺8 纹9 理10 增11 多12 。13

# Entities out of span order, some without "keyword" (inferred) and one whose given keyword ("")
# differs from the inferred one ("enhanced") and must be kept.
HAND = {
    "r1": {
        "text": TEXT,
        "data_split": "dev",
        "data_source": "hand",
        "entities": {
            "1": {"tokens": "积液", "label": "DPO", "start_ix": 4, "end_ix": 5,
                  "relations": [["located_at", "3"]]},
            "2": {"tokens": "增多", "label": "DPO", "start_ix": 11, "end_ix": 12,
                  "relations": [["located_at", "4"]], "keyword": ""},
            "3": {"tokens": "右侧胸腔", "label": "Anatomy", "start_ix": 0, "end_ix": 3,
                  "relations": [], "keyword": "chest"},
            "4": {"tokens": "双肺", "label": "Anatomy", "start_ix": 7, "end_ix": 8,
                  "relations": []},
            "5": {"tokens": "纹理", "label": "NO", "start_ix": 9, "end_ix": 10,
                  "relations": [["modify", "2"]]},
        }},
    "r0": {"text": "心肺未见异常。", "entities": {}, "data_split": "test"},
}

# HAND as this module writes it: entities in span order, ids renumbered, keywords filled in.
HAND_CANONICAL = {
    "r1": {
        "text": TEXT,
        "data_split": "val",
        "entities": {
            "1": {"tokens": "右侧胸腔", "label": "Anatomy", "start_ix": 0, "end_ix": 3,
                  "relations": [], "keyword": "chest"},
            "2": {"tokens": "积液", "label": "DPO", "start_ix": 4, "end_ix": 5,
                  "relations": [["located_at", "1"]], "keyword": "effusion"},
            "3": {"tokens": "双肺", "label": "Anatomy", "start_ix": 7, "end_ix": 8,
                  "relations": [], "keyword": "lung"},
            "4": {"tokens": "纹理", "label": "NO", "start_ix": 9, "end_ix": 10,
                  "relations": [["modify", "5"]], "keyword": "texture"},
            "5": {"tokens": "增多", "label": "DPO", "start_ix": 11, "end_ix": 12,
                  "relations": [["located_at", "3"]], "keyword": ""},
        }},
    "r0": {"text": "心肺未见异常。", "data_split": "test", "entities": {}},
}


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
  assert "data_split" not in ann.to_json_object([r])["x"]


def test_json_object_round_trip_canonicalises():
  reports = ann.from_json_object(HAND)
  assert ann.to_json_object(reports) == HAND_CANONICAL
  assert list(ann.to_json_object(reports)) == ["r1", "r0"]  # the file's order
  assert ann.from_json_object(HAND_CANONICAL) == reports
  assert ann.to_json_object(ann.from_json_object(HAND_CANONICAL)) == HAND_CANONICAL
  # Without "keyword" anywhere, the same keywords are inferred except where HAND overrides one.
  bare = copy.deepcopy(HAND_CANONICAL)
  for e in bare["r1"]["entities"].values():
    del e["keyword"]
  inferred = ann.to_json_object(ann.from_json_object(bare))
  assert inferred["r1"]["entities"]["5"]["keyword"] == "enhanced"
  inferred["r1"]["entities"]["5"]["keyword"] = ""
  assert inferred == HAND_CANONICAL


@pytest.fixture(scope="module")
def synthetic50():
  return ann.synthetic_reports(50)


def test_synthetic_round_trips(synthetic50, tmp_path):
  assert ann.from_json_object(ann.to_json_object(synthetic50)) == synthetic50
  path = tmp_path / "deep" / "er" / "syn.json"
  ann.write_annotations(path, synthetic50)
  assert ann.read_annotations(path) == synthetic50
  raw = path.read_text(encoding="utf-8")
  assert "双" in raw and "\\u" not in raw  # ensure_ascii=False
  assert raw.splitlines()[1].startswith(' "syn000000"')  # indent=1
  assert sorted(p.name for p in path.parent.iterdir()) == ["syn.json"]  # no temporary left
  ann.write_annotations(path, synthetic50[:3])  # replaces the file
  assert len(ann.read_annotations(path)) == 3


def test_synthetic_reports(synthetic50):
  split_of = {int(i): name for name, idx in generate.split_indices(50, 0).items() for i in idx}
  assert [r.id for r in synthetic50] == [generate.example_id(i) for i in range(50)]
  assert [r.split for r in synthetic50] == [split_of[i] for i in range(50)]
  for r in synthetic50:
    assert r.entities, r.id
    assert [(e["start"], e["end"]) for e in r.entities] == sorted(
        (e["start"], e["end"]) for e in r.entities)
    for e in r.entities:
      assert e["keyword"] == report_graph.span_keyword(r.text[e["start"]:e["end"]])
    keys = [(x["head"], x["tail"], x["label"]) for x in r.relations]
    assert keys == sorted(keys)
    # The same graph as the generator's, up to the order of the relations.
    report = generate.make_study(0, int(r.id[3:]))[2]
    assert list(r.entities) == report.entities
    assert sorted(keys) == sorted((x["head"], x["tail"], x["label"]) for x in report.relations)
    assert report_graph.read_graph(*ann.graph_of(r))[1] == report_graph.read_graph(
        report.entities, report.relations)[1]


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
# Validation on write.


def _report(**changes):
  (r,) = [x for x in ann.from_json_object(HAND) if x.id == "r1"]
  return dataclasses.replace(r, **changes)


_E0 = {"start": 0, "end": 4, "label": "Anatomy", "keyword": "chest"}
_E1 = {"start": 4, "end": 6, "label": "DPO", "keyword": "effusion"}
_BAD_REPORTS = [
    ("span_past_text", {"entities": ({**_E0, "end": 15}, _E1)}, "0 <= start < end <= 14"),
    ("empty_span", {"entities": ({**_E0, "end": 0}, _E1)}, "entities[0] span"),
    ("bad_label", {"entities": (_E0, {**_E1, "label": "OBS"})}, "label 'OBS'"),
    ("bad_keyword", {"entities": (_E0, {**_E1, "keyword": "fluid"})}, "keyword 'fluid'"),
    ("missing_keyword", {"entities": ({"start": 0, "end": 4, "label": "Anatomy"},)}, "keyword"),
    ("overlap", {"entities": (_E0, {**_E1, "start": 3})}, "overlap"),
    ("relation_index", {"relations": ({"head": 1, "tail": 5, "label": "modify"},)},
     "not an index"),
    ("relation_label", {"relations": ({"head": 1, "tail": 0, "label": "suggestive_of"},)},
     "label 'suggestive_of'"),
    ("self_relation", {"relations": ({"head": 1, "tail": 1, "label": "modify"},)}, "itself"),
    ("same_pair", {"relations": ({"head": 1, "tail": 0, "label": "modify"},
                                 {"head": 1, "tail": 0, "label": "located_at"})}, "both link"),
    ("bad_split", {"split": "dev"}, "split 'dev'"),
    ("empty_text", {"text": " ", "entities": (), "relations": ()}, "empty"),
]


@pytest.mark.parametrize("changes, hint", [c[1:] for c in _BAD_REPORTS],
                         ids=[c[0] for c in _BAD_REPORTS])
def test_write_validates(tmp_path, changes, hint):
  path = tmp_path / "out.json"
  with pytest.raises(ann.AnnotationError) as e:
    ann.write_annotations(path, [_report(**changes)])
  assert "report 'r1'" in str(e.value) and hint in str(e.value)
  assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


def test_write_rejects_duplicate_ids_and_nothing():
  with pytest.raises(ann.AnnotationError, match="'r1'.*more than once"):
    ann.to_json_object([_report(), _report()])
  with pytest.raises(ann.AnnotationError, match="no reports"):
    ann.to_json_object([])


def test_write_accepts_numpy_ints():
  r = _report(relations=({"head": np.int64(1), "tail": np.int32(0), "label": "located_at"},))
  written = ann.to_json_object([r])
  assert written["r1"]["entities"]["2"]["relations"] == [["located_at", "1"]]
  json.dumps(written)


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


# ------------------------------------------------------------------------------------------------
# The CLI.


def test_cli_writes_the_synthetic_set(tmp_path, capsys):
  out = tmp_path / "sub" / "syn.json"
  assert export_synthetic.main([f"--output={out}", "--num_examples=20", "--seed=1"]) == 0
  assert capsys.readouterr().out == f"wrote 20 reports (train 14, val 2, test 4) to {out}\n"
  reports = ann.read_annotations(out)
  assert len(reports) == 20 and reports == ann.synthetic_reports(20, seed=1)
  assert export_synthetic.DEFAULT_NUM_EXAMPLES == cncxr.DEFAULT_SYNTHETIC_EXAMPLES


def test_cli_unwritable_output(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  assert export_synthetic.main([f"--output={blocker / 'syn.json'}", "--num_examples=3"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and "not a folder" in err


def test_cli_bad_flags():
  with pytest.raises(SystemExit) as e:
    export_synthetic.main(["--output=x.json", "--num_examples=0"])
  assert e.value.code == 2
