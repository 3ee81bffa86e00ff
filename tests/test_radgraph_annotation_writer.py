"""Writing CN-RadGraph annotation files: the synthetic set's round trips, every validation error
on write, the export CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cnx2rg_jax.radgraph import annotation_writer as aw
from cnx2rg_jax.radgraph import annotations as ann
from cnx2rg_jax.radgraph import export_synthetic
from cnx2rg_jax.text import report_graph
from tests.helpers.radgraph_annotations import HAND
from tfds_cncxr import cncxr
from tfds_cncxr.synthetic import generate


# ------------------------------------------------------------------------------------------------
# The synthetic set's round trips.


@pytest.fixture(scope="module")
def synthetic50():
  return aw.synthetic_reports(50)


def test_synthetic_round_trips(synthetic50, tmp_path):
  assert ann.from_json_object(aw.to_json_object(synthetic50)) == synthetic50
  path = tmp_path / "deep" / "er" / "syn.json"
  aw.write_annotations(path, synthetic50)
  assert ann.read_annotations(path) == synthetic50
  raw = path.read_text(encoding="utf-8")
  assert "双" in raw and "\\u" not in raw  # ensure_ascii=False
  assert raw.splitlines()[1].startswith(' "syn000000"')  # indent=1
  assert sorted(p.name for p in path.parent.iterdir()) == ["syn.json"]  # no temporary left
  aw.write_annotations(path, synthetic50[:3])  # replaces the file
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
    aw.write_annotations(path, [_report(**changes)])
  assert "report 'r1'" in str(e.value) and hint in str(e.value)
  assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


def test_write_rejects_duplicate_ids_and_nothing():
  with pytest.raises(ann.AnnotationError, match="'r1'.*more than once"):
    aw.to_json_object([_report(), _report()])
  with pytest.raises(ann.AnnotationError, match="no reports"):
    aw.to_json_object([])


def test_write_accepts_numpy_ints():
  r = _report(relations=({"head": np.int64(1), "tail": np.int32(0), "label": "located_at"},))
  written = aw.to_json_object([r])
  assert written["r1"]["entities"]["2"]["relations"] == [["located_at", "1"]]
  json.dumps(written)


# ------------------------------------------------------------------------------------------------
# The CLI.


def test_cli_writes_the_synthetic_set(tmp_path, capsys):
  out = tmp_path / "sub" / "syn.json"
  assert export_synthetic.main([f"--output={out}", "--num_examples=20", "--seed=1"]) == 0
  assert capsys.readouterr().out == f"wrote 20 reports (train 14, val 2, test 4) to {out}\n"
  reports = ann.read_annotations(out)
  assert len(reports) == 20 and reports == aw.synthetic_reports(20, seed=1)
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
