"""The synthetic report writer: true, varied, exactly annotated, labeler-recoverable."""

import csv
import pathlib

import numpy as np
import pytest

from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from tfds_cncxr.synthetic import findings as findings_lib
from tfds_cncxr.synthetic.findings import Finding
from tfds_cncxr.synthetic.reports import MAX_REPORT_CHARS, write_report


def _studies(n, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    fs = findings_lib.sample_findings(rng)
    yield fs, write_report(fs, rng)


def test_keyword_order_matches_table1():
  rows = list(csv.DictReader(open(pathlib.Path(__file__).parent / "data/table1_keywords.csv")))
  names = [r["keyword"] for r in rows]
  assert [k.name for k in kw.KEYWORDS] == names
  assert [k.kind for k in kw.KEYWORDS] == [r["kind"] for r in rows]
  assert len(kw.ANATOMY_KEYS) == len(kw.LESION_KEYS) == 24


def test_every_lexicon_term_is_inside_an_entity_of_its_keyword():
  for _, rep in _studies(600):
    for start, end, key in kw.find_terms(rep.text):
      covering = [e for e in rep.entities if e["start"] <= start and end <= e["end"]]
      assert covering, f"{rep.text[start:end]!r} (as {key}) is outside every entity: {rep.text}"
      assert covering[0]["keyword"] == key, (rep.text, rep.text[start:end], covering[0])


def test_lengths_spans_and_relations_are_well_formed():
  lengths = []
  for _, rep in _studies(600):
    lengths.append(len(rep.text))
    assert rep.text.endswith("。")
    for e in rep.entities:
      assert 0 <= e["start"] < e["end"] <= len(rep.text)
      assert e["label"] in report_graph.ENTITY_LABELS
    for r in rep.relations:
      head, tail = rep.entities[r["head"]], rep.entities[r["tail"]]
      if r["label"] == "located_at":
        assert head["label"] in ("DPO", "DNO", "NO") and tail["label"] == "Anatomy"
      else:
        assert (head["label"] == "Anatomy") == (tail["label"] == "Anatomy")
  assert min(lengths) >= 40 and max(lengths) <= MAX_REPORT_CHARS


def test_lesion_label_is_positive_exactly_when_the_finding_is_drawn():
  seen = set()
  for fs, rep in _studies(3000):
    present = {f.kind for f in fs}
    for spec in findings_lib.FINDING_SPECS:
      label = rep.keyword_labels[kw.KEYWORD_INDEX[spec.lesion]]
      assert (label == kw.POSITIVE) == (spec.kind in present), (spec.kind, rep.text)
    seen |= present
  assert seen == set(findings_lib.FINDING_KINDS)  # every kind occurs in 3000 studies


def test_sides_and_zones_are_stated():
  zh = {"right": "右", "left": "左"}
  for fs, rep in _studies(1500):
    for f in fs:
      if f.kind == "patchy_shadow":
        shadow = [e for e in rep.entities if e["keyword"] == "shadow" and e["label"] == "DPO"]
        assert len(shadow) == 1
        site = rep.text[[e for e in rep.entities if e["label"] == "Anatomy"
                         and e["end"] <= shadow[0]["start"]][-1]["start"]:shadow[0]["start"]]
        assert zh[f.side] in site and {"upper": "上", "middle": "中", "lower": "下"}[f.zone] in site
      if f.kind in ("effusion", "pneumothorax", "rib_fracture", "drainage_tube"):
        lesion = findings_lib.SPEC_BY_KIND[f.kind].lesion
        e = next(e for e in rep.entities if e["keyword"] == lesion and e["label"] == "DPO")
        sites = [rep.entities[r["tail"]] for r in rep.relations
                 if r["label"] == "located_at" and rep.entities[r["head"]] is e]
        assert sites and all(rep.text[s["start"]] == zh[f.side] for s in sites), rep.text


def test_normal_structures_are_negated_and_phrasing_varies():
  texts, negated = set(), 0
  for fs, rep in _studies(400):
    texts.add(rep.text)
    if not fs:
      assert (rep.keyword_labels != kw.POSITIVE).all()
      assert rep.keyword_labels[kw.KEYWORD_INDEX["heart"]] == kw.NEGATED
    negated += "未见" in rep.text
  assert len(texts) > 300 and negated > 100


def test_deterministic_given_rng():
  a = [r.text for _, r in _studies(50, seed=3)]
  b = [r.text for _, r in _studies(50, seed=3)]
  assert a == b


def test_read_graph_on_a_hand_built_graph():
  text = "两肺纹理增强，心影不大。"
  ents = [{"start": 0, "end": 2, "label": "Anatomy", "keyword": "lung"},
          {"start": 2, "end": 4, "label": "NO", "keyword": "texture"},
          {"start": 4, "end": 6, "label": "DPO", "keyword": "enhanced"},
          {"start": 7, "end": 9, "label": "Anatomy", "keyword": "heart"},
          {"start": 9, "end": 11, "label": "DNO", "keyword": ""}]
  rels = [{"head": 2, "tail": 0, "label": "located_at"}, {"head": 1, "tail": 2, "label": "modify"},
          {"head": 4, "tail": 3, "label": "located_at"}]
  labels, pairs = report_graph.read_graph(ents, rels)
  assert pairs == [("lung", "enhanced"), ("lung", "texture")]
  expect = np.full(48, kw.NOT_MENTIONED, np.int8)
  for key in ("lung", "texture", "enhanced"):
    expect[kw.KEYWORD_INDEX[key]] = kw.POSITIVE
  expect[kw.KEYWORD_INDEX["heart"]] = kw.NEGATED
  np.testing.assert_array_equal(labels, expect)
  assert text[ents[2]["start"]:ents[2]["end"]] == "增强"


def test_finding_validation_names_the_problem():
  with pytest.raises(ValueError, match="side"):
    Finding("effusion")
  with pytest.raises(ValueError, match="unknown finding kind 'tumour'"):
    Finding("tumour")


def test_demographics_follow_the_paper():
  from tfds_cncxr.synthetic import generate  # pylint: disable=import-outside-toplevel
  draws = [generate._demographics(np.random.default_rng([0, i])) for i in range(4000)]
  ages = np.array([a for _, a in draws])
  assert abs(ages.mean() - 44.18) < 1.0 and abs(ages.std() - 22.34) < 1.0
  sexes = [s for s, _ in draws]
  assert abs(sexes.count("M") / 4000 - 27949 / 51981) < 0.03
  assert 0 < sexes.count("U") < 200


def test_find_terms_maximises_coverage():
  def read(text):
    return [(text[a:b], k) for a, b, k in kw.find_terms(text)]
  assert read("右侧第5肋骨折") == [("肋", "rib"), ("骨折", "fracture")]  # greedy would take 肋骨
  assert read("右侧第6肋骨骨折") == [("肋骨", "rib"), ("骨折", "fracture")]
  assert read("主动脉结突出") == [("主动脉结", "aortic_knot"), ("突出", "prominence")]
  assert read("其内无肺纹理") == [("无肺纹理", "no_lung_texture")]
  assert read("呈肺气肿改变") == [("肺气肿", "emphysema")]  # a tie in coverage: fewer terms
  assert read("中心静脉置管") == []
