"""BIO tags, windows and pair arrays of the CN-RadGraph extractor; its graph metrics."""

import numpy as np
import pytest

from cnx2rg_jax.radgraph import features, metrics
from tfds_cncxr.synthetic import generate


def _synthetic(n):
  out = []
  for i in range(n):
    _, _, report, _, _ = generate.make_study(0, i)
    out.append(report)
  return out


def test_tags_known_answer():
  ents = [{"start": 0, "end": 2, "label": "Anatomy"}, {"start": 2, "end": 6, "label": "DPO"}]
  tags = features.tags_of(7, ents)  # 右侧胸腔积液。 with 右侧 | 胸腔积液
  names = [features.TAGS[t] for t in tags]
  assert names == ["B-Anatomy", "I-Anatomy", "B-DPO", "I-DPO", "I-DPO", "I-DPO", "O"]
  assert features.spans_of(tags) == ents


def test_bio_round_trip_on_synthetic_reports():
  for report in _synthetic(200):
    tags = features.tags_of(len(report.text), report.entities)
    got = features.spans_of(tags)
    assert got == [{k: e[k] for k in ("start", "end", "label")} for e in report.entities]


def test_spans_of_is_lenient_and_splits_adjacent_entities():
  t = {name: i for i, name in enumerate(features.TAGS)}
  tags = [t["I-DNO"], t["I-DNO"], t["B-DNO"], t["I-Anatomy"], t["O"], t["I-NO"]]
  assert features.spans_of(tags) == [
      {"start": 0, "end": 2, "label": "DNO"}, {"start": 2, "end": 3, "label": "DNO"},
      {"start": 3, "end": 4, "label": "Anatomy"}, {"start": 5, "end": 6, "label": "NO"}]


def test_overlapping_entities_are_refused():
  with pytest.raises(ValueError, match="overlap"):
    features.tags_of(5, [{"start": 0, "end": 3, "label": "NO"},
                         {"start": 2, "end": 4, "label": "DPO"}])


def test_windows_cut_at_sentence_ends():
  text = "甲乙丙。丁戊。己庚辛壬癸子丑。寅"
  wins = features.windows(text, 8)
  assert wins == [(0, 7), (7, 15), (15, 16)]
  # 己庚辛壬癸子丑。 is 8 characters: it fits alone. A sentence longer than the window is cut
  # hard, and its tail packs with what follows.
  assert features.windows(text, 5) == [(0, 4), (4, 7), (7, 12), (12, 16)]


@pytest.mark.parametrize("max_chars", [20, 40, 160])
def test_windows_tile_each_report(max_chars):
  for report in _synthetic(50):
    wins = features.windows(report.text, max_chars)
    assert wins[0][0] == 0 and wins[-1][1] == len(report.text)
    assert all(a[1] == b[0] for a, b in zip(wins, wins[1:]))
    assert all(0 < e - s <= max_chars for s, e in wins)
    for s, e in wins[:-1]:
      hard = e - s == max_chars
      assert report.text[e - 1] in features.SENTENCE_ENDS or hard


def test_training_windows_keep_graphs_and_count_lost_relations():
  report = _synthetic(6)[5]
  items, lost = features.training_windows(report.text, report.entities, report.relations,
                                          max_chars=30, max_entities=48)
  # Synthetic relations stay inside a sentence, so none are lost, and every entity and
  # relation comes back in window coordinates.
  assert lost == 0
  assert sum(len(e) for _, e, _ in items) == len(report.entities)
  assert sum(len(r) for _, _, r in items) == len(report.relations)
  offset = 0
  for text, ents, rels in items:
    for e in ents:
      assert text[e["start"]:e["end"]] == report.text[offset + e["start"]:offset + e["end"]]
    offset += len(text)
  # A relation whose ends fall in different windows is dropped and counted.
  ents = [{"start": 0, "end": 1, "label": "Anatomy"}, {"start": 3, "end": 4, "label": "DPO"}]
  items, lost = features.training_windows("甲。乙丙。", ents,
                                          [{"head": 1, "tail": 0, "label": "located_at"}],
                                          max_chars=3, max_entities=4)
  assert lost == 1 and [t for t, _, _ in items] == ["甲。", "乙丙。"]


def test_training_windows_respect_max_entities():
  report = _synthetic(6)[5]
  items, _ = features.training_windows(report.text, report.entities, report.relations,
                                       max_chars=160, max_entities=8)
  assert len(items) > 1 and all(len(e) <= 8 for _, e, _ in items)


def test_encode_windows_arrays():
  vocab = features.CharVocab.build(["右侧胸腔积液。"])
  ents = [{"start": 0, "end": 2, "label": "Anatomy"}, {"start": 2, "end": 6, "label": "DPO"}]
  rels = [{"head": 1, "tail": 0, "label": "located_at"}]
  b = features.encode_windows([("右侧胸腔积液。", ents, rels)], vocab, 10, 4)
  assert b.chars[0, :7].tolist() == vocab.encode("右侧胸腔积液。").tolist()
  assert (b.chars[0, 7:] == features.PAD).all() and (b.chars[0, :7] > features.UNK).all()
  assert b.starts[0, :2].tolist() == [0, 2] and b.ends[0, :2].tolist() == [2, 6]
  assert b.entity_mask[0].tolist() == [True, True, False, False]
  expected = np.zeros((4, 4), np.int32)
  expected[1, 0] = features.relation_class("located_at")
  np.testing.assert_array_equal(b.relations[0], expected)
  assert vocab.encode("肺X").tolist()[1] == features.UNK
  assert features.CharVocab.from_json(vocab.to_json()) == vocab


def _ent(s, e, label):
  return {"start": s, "end": e, "label": label}


def test_graph_scores_known_answer():
  gold_e = [_ent(0, 2, "Anatomy"), _ent(2, 6, "DPO"), _ent(7, 9, "Anatomy"), _ent(9, 11, "DNO")]
  gold_r = [{"head": 1, "tail": 0, "label": "located_at"},
            {"head": 3, "tail": 2, "label": "located_at"}]
  # Right: entities 0 and 1 and their relation. Wrong: a label (DPO for DNO), a span (7..8), an
  # extra relation; the second relation is lost because its entities are wrong.
  pred_e = [_ent(0, 2, "Anatomy"), _ent(2, 6, "DPO"), _ent(7, 8, "Anatomy"), _ent(9, 11, "DPO")]
  pred_r = [{"head": 1, "tail": 0, "label": "located_at"},
            {"head": 3, "tail": 2, "label": "located_at"},
            {"head": 0, "tail": 1, "label": "modify"}]
  s = metrics.graph_scores([(pred_e, pred_r)], [(gold_e, gold_r)])
  assert (s["entity_tp"], s["entity_fp"], s["entity_fn"]) == (2, 2, 2)
  assert (s["relation_tp"], s["relation_fp"], s["relation_fn"]) == (1, 2, 1)
  assert s["entity_f1"] == pytest.approx(0.5)
  assert s["relation_precision"] == pytest.approx(1 / 3)
  assert s["relation_recall"] == pytest.approx(0.5)
  assert s["relation_f1"] == pytest.approx(0.4)
  assert s["per_label"]["DNO"]["entity_fn"] == 1 and s["per_label"]["DNO"]["entity_tp"] == 0
  assert s["per_label"]["modify"]["relation_fp"] == 1


def test_graph_scores_match_a_brute_force_count():
  rng = np.random.default_rng(0)
  reports = _synthetic(30)
  gold, pred = [], []
  for r in reports:
    ents = [dict(e) for e in r.entities]
    rels = [dict(x) for x in r.relations]
    gold.append((ents, rels))
    p_ents = [dict(e, label="NO") if rng.random() < 0.1 else dict(e) for e in ents]
    p_rels = [x for x in rels if rng.random() > 0.2]
    pred.append((p_ents, p_rels))
  s = metrics.graph_scores(pred, gold)
  tp = fp = fn = 0
  for (pe, pr), (ge, gr) in zip(pred, gold):
    for x in pr:  # every predicted relation, checked against every gold relation
      key = lambda es, rel: (es[rel["head"]]["start"], es[rel["head"]]["end"],
                             es[rel["head"]]["label"], es[rel["tail"]]["start"],
                             es[rel["tail"]]["end"], es[rel["tail"]]["label"], rel["label"])
      if any(key(pe, x) == key(ge, y) for y in gr):
        tp += 1
      else:
        fp += 1
    fn += sum(not any(key(pe, x) == key(ge, y) for x in pr) for y in gr)
  assert (s["relation_tp"], s["relation_fp"], s["relation_fn"]) == (tp, fp, fn)
  assert 0 < s["relation_f1"] < 1


def test_graph_scores_empty_is_none():
  s = metrics.graph_scores([([], [])], [([], [])])
  assert s["entity_f1"] is None and s["relation_f1"] is None
