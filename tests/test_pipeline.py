"""The grain input pipeline over a tiny synthetic build."""

import io

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax.data import dataset, oversampling, pipeline, transforms, vocabulary
from cnx2rg_jax.text import cleaning
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def setup(tiny_synthetic):
  config, prepared = tiny_synthetic
  texts = dataset.read_split_texts(prepared, "train")
  tok = vocabulary.tokenizer_for_run(config.text, prepared, None, texts)
  return config, prepared, tok, texts


def _train(setup, **kw_args):
  config, prepared, tok, texts = setup
  kwargs = dict(batch_size=config.train.batch_size, seed=config.seed,
                shard=pipeline.ProcessShard(0, 1), split_texts=texts)
  kwargs.update(kw_args)
  return pipeline.train_dataset(prepared, kwargs.pop("data", config.data), tok, **kwargs)


def test_shapes_and_dtypes(setup):
  config, *_ = setup
  batch = next(iter(_train(setup)))
  b, c, L = config.train.batch_size, config.data.crop_size, config.data.max_tokens
  assert batch["image"].shape == (b, c, c, 1) and batch["image"].dtype == np.float32
  assert batch["report_tokens"].shape == (b, L) and batch["report_tokens"].dtype == np.int32
  assert batch["report_mask"].shape == (b, L) and batch["report_mask"].dtype == np.int32
  assert batch["keyword_labels"].shape == (b, kw.NUM_KEYWORDS)
  assert batch["keyword_labels"].dtype == np.int8
  assert batch["id"].shape == (b,) and batch["report"].shape == (b,)
  tokens, mask = batch["report_tokens"], batch["report_mask"]
  assert (tokens[:, 0] == tokenizer_lib.BOS_ID).all()
  lengths = mask.sum(1)
  assert (tokens[np.arange(b), lengths - 1] == tokenizer_lib.EOS_ID).all()
  assert (tokens[mask == 0] == tokenizer_lib.PAD_ID).all()


def test_eval_images_are_center_crops_zscored_like_numpy(setup):
  config, prepared, tok, _ = setup
  ds = pipeline.eval_dataset(prepared, "val", config.data, tok, batch_size=2,
                             shard=pipeline.ProcessShard(0, 1))
  batch = next(iter(ds))
  raw = prepared.source("val")[0]
  pixels = np.asarray(Image.open(io.BytesIO(raw["image"])).convert("L"), np.float64)
  s, c = config.data.image_size, config.data.crop_size
  assert pixels.shape == (s, s)  # the synthetic set is stored at 256
  o = (s - c) // 2
  crop = pixels[o:o + c, o:o + c]
  expect = (crop - crop.mean()) / crop.std()
  np.testing.assert_allclose(batch["image"][0, ..., 0], expect, atol=1e-4)
  means = batch["image"].mean(axis=(1, 2, 3))
  stds = batch["image"].std(axis=(1, 2, 3))
  np.testing.assert_allclose(means, 0, atol=1e-4)
  np.testing.assert_allclose(stds, 1, atol=1e-4)
  assert tok.decode(batch["report_tokens"][0]) == cleaning.clean_report(raw["report"].decode())


def _ids(ds):
  return [i for batch in ds for i in batch["id"]]


def test_process_shards_are_disjoint_and_complete(setup):
  config, prepared, tok, _ = setup
  all_ids = {transforms.as_text(prepared.source("test")[i]["id"])
             for i in range(prepared.num_examples("test"))}
  shards = [_ids(pipeline.eval_dataset(prepared, "test", config.data, tok, batch_size=3,
                                       shard=pipeline.ProcessShard(p, 3))) for p in range(3)]
  assert sum(len(s) for s in shards) == len(all_ids)
  assert set().union(*map(set, shards)) == all_ids
  # The same holds for one training epoch.
  train = [_ids(_train(setup, batch_size=1, num_epochs=1, shard=pipeline.ProcessShard(p, 2)))
           for p in range(2)]
  assert not set(train[0]) & set(train[1])
  assert len(train[0]) + len(train[1]) == prepared.num_examples("train")


def _first(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_epochs_are_repeatable_and_reshuffled(setup):
  _, prepared, *_ = setup
  n = prepared.num_examples("train")
  a = np.concatenate([b["id"] for b in _first(_train(setup, batch_size=1), 2 * n)])
  b = np.concatenate([b["id"] for b in _first(_train(setup, batch_size=1), 2 * n)])
  np.testing.assert_array_equal(a, b)
  assert sorted(a[:n]) == sorted(a[n:]) and list(a[:n]) != list(a[n:])
  c = np.concatenate([b["id"] for b in _first(_train(setup, batch_size=1, seed=7), n)])
  assert list(c) != list(a[:n])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_iterator_state_gives_the_next_batch(setup, workers):
  config, *_ = setup
  data = config.data.copy_and_resolve_references()
  data.num_workers = workers
  it = iter(_train(setup, data=data))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = next(it)
  resumed = iter(_train(setup, data=data))
  assert not np.array_equal(next(iter(_train(setup, data=data)))["id"], expected["id"])
  resumed.set_state(state)
  got = next(resumed)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k])


def test_oversampling_plan_matches_brute_force():
  rng = np.random.default_rng(0)
  labels = np.full((500, kw.NUM_KEYWORDS), kw.NOT_MENTIONED, np.int8)
  counts = {"texture": 300, "effusion": 20, "fracture": 3, "shadow": 120}
  for key, n in counts.items():
    labels[rng.choice(500, n, replace=False), kw.KEYWORD_INDEX[key]] = kw.POSITIVE
  plan = oversampling.plan_oversampling(labels, min_count=200, max_rate=10, max_samples=150, seed=0)
  drawn = labels[plan.indices] == kw.POSITIVE
  got = {key: int(drawn[:, kw.KEYWORD_INDEX[key]].sum()) for key in counts}
  extra = plan.extra_per_keyword
  assert extra == {"effusion": 130, "fracture": 27, "shadow": 30}  # min(10n, 150) - n
  assert got["fracture"] >= 30 and got["effusion"] >= 150 and got["shadow"] >= 150
  assert (np.bincount(plan.indices, minlength=500) >= 1).all()  # every report kept
  # Extras come in keyword order; fracture (last) repeats its 3 positives evenly, 9 times each.
  fracture_rows = np.flatnonzero(labels[:, kw.KEYWORD_INDEX["fracture"]] == kw.POSITIVE)
  assert set(np.bincount(plan.indices[-27:], minlength=500)[fracture_rows]) == {9}


def test_oversampling_switch_changes_the_epoch(setup):
  config, prepared, tok, texts = setup
  data = config.data.copy_and_resolve_references()
  assert pipeline.epoch_indices(data, texts, 0) is None
  data.oversample.enabled = True
  data.oversample.min_count = 10 ** 6
  indices = pipeline.epoch_indices(data, texts, 0)
  assert len(indices) > prepared.num_examples("train")
  ids = _ids(_train(setup, data=data, batch_size=1, num_epochs=1))
  assert len(ids) == len(indices) and len(set(ids)) == prepared.num_examples("train")
  # The learning-rate schedule's epoch is the oversampled one.
  assert pipeline.steps_per_epoch(data, texts, 0, 4) == len(indices) // 4
  data.oversample.enabled = False
  assert pipeline.steps_per_epoch(data, texts, 0, 4) == prepared.num_examples("train") // 4


def test_sentence_shuffle_permutes_sentences_only_when_on(setup):
  config, prepared, tok, _ = setup
  data = config.data.copy_and_resolve_references()
  off = _first(_train(setup, data=data, batch_size=8), 3)
  data.sentence_shuffle = True
  on = _first(_train(setup, data=data, batch_size=8), 3)
  changed = 0
  for b_off, b_on in zip(off, on):
    for t_off, t_on, ref in zip(b_off["report_tokens"], b_on["report_tokens"], b_on["report"]):
      assert tok.decode(t_off) == ref
      shuffled = tok.decode(t_on)
      assert sorted(cleaning.split_sentences(shuffled)) == sorted(cleaning.split_sentences(ref))
      changed += shuffled != ref
  assert changed > 0
