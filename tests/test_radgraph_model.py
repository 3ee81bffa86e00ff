"""The CN-RadGraph network, its training, its saved model, and its use as the clinical labeler."""

import json

import jax
import numpy as np
import pytest

from cnx2rg_jax.radgraph import annotation_writer, annotations, extractor, features, train
from cnx2rg_jax.radgraph.model import CNRadGraph
from cnx2rg_jax.text import report_graph
from configs import cn_radgraph as radgraph_configs
from tests.helpers.model_configs import radgraph_config_with


def _tiny(**overrides):
  c = radgraph_configs.get_config("tiny")
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def test_padding_and_bucket_length_do_not_change_real_positions():
  cfg = radgraph_config_with(vocab_size=50, max_chars=96, max_entities=4, d_model=32, num_heads=2,
                             d_ff=64, pair_dim=16, num_layers=2)
  model = CNRadGraph(cfg)
  rng = np.random.default_rng(0)
  chars = np.zeros((2, 96), np.int32)
  chars[0, :40] = rng.integers(2, 50, 40)
  chars[1, :25] = rng.integers(2, 50, 25)
  starts = np.array([[0, 5, 30, 0], [2, 10, 0, 0]], np.int32)
  ends = np.array([[3, 9, 38, 1], [6, 20, 1, 1]], np.int32)
  labels = np.array([[0, 1, 2, 0], [0, 3, 0, 0]], np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), chars, starts, ends, labels, mask)["params"]
  apply = jax.jit(model.apply)
  full = apply({"params": params}, chars, starts, ends, labels, mask)
  cut = apply({"params": params}, chars[:, :64], starts, ends, labels, mask)
  np.testing.assert_allclose(full[0][0, :40], cut[0][0, :40], atol=1e-5)
  np.testing.assert_allclose(full[0][1, :25], cut[0][1, :25], atol=1e-5)
  np.testing.assert_allclose(full[1], cut[1], atol=1e-5)
  # A padding entity does not change the logits of the real pairs.
  other = labels.copy()
  other[0, 3], other[1, 2:] = 3, 2
  moved = apply({"params": params}, chars, starts + ~mask * 7, ends + ~mask * 9, other, mask)
  np.testing.assert_allclose(full[1][0, :3, :3], moved[1][0, :3, :3], atol=1e-5)
  np.testing.assert_allclose(full[1][1, :2, :2], moved[1][1, :2, :2], atol=1e-5)
  assert full[1].shape == (2, 4, 4, features.NUM_RELATION_CLASSES)


def _overfit_file(tmp_path, n=12):
  """n synthetic reports twice over: once as train, once (same text) as val."""
  reports = annotation_writer.synthetic_reports(n, seed=3)
  both = [annotations.AnnotatedReport(r.id, r.text, "train", r.entities, r.relations)
          for r in reports]
  both += [annotations.AnnotatedReport(r.id + "v", r.text, "val", r.entities, r.relations)
           for r in reports]
  path = tmp_path / "tiny.json"
  annotation_writer.write_annotations(path, both)
  return path, reports


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("overfit")
  path, reports = _overfit_file(tmp)
  config = _tiny(**{"data.source": "file", "data.annotations": str(path), "model.dropout": 0.0,
                    "model.d_model": 64, "model.d_ff": 128, "model.pair_dim": 64,
                    "model.num_layers": 2, "train.num_steps": 160, "train.eval_every": 80,
                    "train.learning_rate": 3e-3, "train.warmup_steps": 20})
  result = train.train(config, str(tmp / "wd"), log=lambda _: None)
  return result, reports, tmp / "wd"


def test_trains_on_a_tiny_set_and_overfits_it(overfit):
  result, _, _ = overfit
  assert result["entity_f1"] == 1.0
  assert result["relation_f1"] == 1.0


def test_saved_model_extracts_the_gold_graphs_and_clinical_pairs(overfit):
  _, reports, workdir = overfit
  ex = extractor.load(workdir)
  graphs = ex.extract([r.text for r in reports])
  for r, (ents, rels) in zip(reports, graphs):
    gold_ents, gold_rels = annotations.graph_of(r)
    assert ents == gold_ents  # keywords included, read off the spans
    key = lambda x: (x["head"], x["tail"], x["label"])
    assert sorted(rels, key=key) == sorted(gold_rels, key=key)
  # As the clinical labeler: DPO located_at Anatomy pairs, as read_graph reads the gold graph.
  pairs = ex.label_many([r.text for r in reports])
  assert pairs == [report_graph.read_graph(*annotations.graph_of(r))[1] for r in reports]
  assert any(pairs) and ex(reports[0].text) == pairs[0]


def test_long_reports_are_read_in_windows(overfit):
  _, reports, workdir = overfit
  ex = extractor.load(workdir)
  text = "".join(r.text for r in reports[:4])  # longer than the model's window
  wins = features.windows(text, ex.config.max_chars)
  assert len(wins) > 1
  whole = ex.extract([text])[0]
  parts = ex.extract([text[a:b] for a, b in wins])
  expected_ents, expected_rels = [], []
  for (a, _), (ents, rels) in zip(wins, parts):
    base = len(expected_ents)
    expected_ents += [{**e, "start": e["start"] + a, "end": e["end"] + a} for e in ents]
    expected_rels += [{**r, "head": r["head"] + base, "tail": r["tail"] + base} for r in rels]
  assert whole == (expected_ents, expected_rels)
  assert all(text[e["start"]:e["end"]] for e in whole[0])


def test_same_seed_same_model(tmp_path):
  config = _tiny(**{"train.num_steps": 6, "train.eval_every": 6})
  a = train.train(config, str(tmp_path / "a"), log=lambda _: None)
  b = train.train(config, str(tmp_path / "b"), log=lambda _: None)
  assert a["entity_tp"] == b["entity_tp"] and a["relation_tp"] == b["relation_tp"]
  pa, pb = extractor.load(tmp_path / "a").params, extractor.load(tmp_path / "b").params
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


def test_epoch_batches_cover_every_window_once_or_more():
  buckets = np.array([32] * 5 + [64] * 9 + [160] * 2)
  batches = train.epoch_batches(buckets, 4, np.random.default_rng(0))
  assert all(len(idx) == 4 and (buckets[idx] == length).all() for length, idx in batches)
  seen = np.concatenate([idx for _, idx in batches])
  assert set(seen.tolist()) == set(range(16))
  assert len(batches) == 2 + 3 + 1


def test_checkpoint_errors_name_the_problem(overfit, tmp_path):
  _, _, workdir = overfit
  with pytest.raises(extractor.CheckpointError, match="no trained CN-RadGraph"):
    extractor.load(tmp_path / "nothing")
  broken = tmp_path / "broken"
  (broken / "model").mkdir(parents=True)
  (broken / "model" / extractor.META_FILE).write_text("{not json")
  with pytest.raises(extractor.CheckpointError, match="not a usable CN-RadGraph"):
    extractor.load(broken)
  # A description that does not fit the saved parameters.
  import shutil
  mismatch = tmp_path / "mismatch"
  shutil.copytree(workdir, mismatch)
  meta_path = mismatch / "model" / extractor.META_FILE
  meta = json.loads(meta_path.read_text())
  meta["model"]["d_model"] *= 2
  meta["model"]["d_ff"] *= 2
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(extractor.CheckpointError, match="cannot restore"):
    extractor.load(mismatch)
  shutil.rmtree(mismatch / "model" / "params")
  with pytest.raises(extractor.CheckpointError, match="incomplete"):
    extractor.load(mismatch)


def test_training_refuses_to_overwrite_a_model(overfit):
  _, _, workdir = overfit
  with pytest.raises(train.RadGraphRunError, match="already holds"):
    train.train(_tiny(), str(workdir))


@pytest.mark.parametrize("overrides, match", [
    ({"data.source": "web"}, "data.source"),
    ({"data.source": "file"}, "data.annotations"),
    ({"model.num_heads": 3}, "num_heads"),
    ({"train.batch_size": 10_000}, "batch size"),
])
def test_bad_configs_are_named(tmp_path, overrides, match):
  with pytest.raises(train.RadGraphRunError, match=match):
    train.train(_tiny(**overrides), str(tmp_path / "wd"))


def test_annotation_file_without_val_reports_is_refused(tmp_path):
  reports = [annotations.AnnotatedReport(r.id, r.text, "train", r.entities, r.relations)
             for r in annotation_writer.synthetic_reports(5)]
  path = tmp_path / "a.json"
  annotation_writer.write_annotations(path, reports)
  config = _tiny(**{"data.source": "file", "data.annotations": str(path)})
  with pytest.raises(train.RadGraphRunError, match="no 'val' reports"):
    train.train(config, str(tmp_path / "wd"))
