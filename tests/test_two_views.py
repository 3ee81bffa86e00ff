"""Studies of two views (R2Gen's IU X-Ray checkpoints) end to end: the release build stores both,
the eval pipeline feeds [B, 2, H, W, 1], --mode=eval, --mode=predict (study folders and
FRONTAL+LATERAL), the card and bench_decode all run a converted IU X-Ray workdir, and agree with
a PIL re-derivation of the inputs."""

from __future__ import annotations

import base64
import copy
import io
import json
import pathlib
import re
import types

import numpy as np
import pytest
from PIL import Image

import tfds_cncxr
from cnx2rg_jax import predict, run as run_lib
from cnx2rg_jax.card import attention
from cnx2rg_jax.convert import r2gen as conv
from cnx2rg_jax.data import dataset, pipeline, study_files
from cnx2rg_jax.text.word_vocab import WordTokenizer
from cnx2rg_jax.inference import generate, trained
from tfds_cncxr import images, release
from tests.helpers import r2gen_harness as harness
from tests.helpers.r2gen_state import r2gen_state_dict

REPORTS = ["The heart is normal. No effusion.", "Lungs are clear, no pneumothorax.",
           "Mild cardiomegaly. Stable.", "No focal consolidation. Heart normal.",
           "The lungs are clear.", "Heart size normal. Lungs clear."]
SPLITS = {"train": 6, "val": 2, "test": 3}
SIZES = ((96, 80), (64, 72))  # (h, w) of the frontal and lateral views: they differ
MAX_LEN = 12
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449 * 255.0, 0.226 * 255.0


def _view_image(rng, h: int, w: int) -> np.ndarray:
  """A bright disc of random place and size on a dark noisy ground: studies that differ enough
  for a random model to write different reports."""
  y, x = np.mgrid[:h, :w]
  cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.4) * h
  disc = ((y - cy) ** 2 + (x - cx) ** 2 < r * r) * rng.uniform(120, 220)
  return np.clip(disc + rng.normal(30, 10, (h, w)), 0, 255).astype(np.uint8)


def _write_release(root):
  rng = np.random.default_rng(0)
  data = {}
  for split, n in SPLITS.items():
    data[split] = []
    for i in range(n):
      sid = f"{split}{i}"
      for v, (h, w) in enumerate(SIZES):
        path = root / "images" / sid / f"{v}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_view_image(rng, h, w)).save(path)
      data[split].append({"id": sid, "report": REPORTS[(i + len(sid)) % len(REPORTS)],
                          "image_path": [f"{sid}/0.png", f"{sid}/1.png"]})
  (root / "annotation.json").write_text(json.dumps(data))


def _reference_view(path, size: int) -> np.ndarray:
  """A view as R2Gen's IU eval transform prepares it: bilinear resize to size x size, then
  ImageNet statistics (our gray-channel form), re-derived with PIL and NumPy."""
  with Image.open(path) as im:
    x = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), np.float64)
  return ((x - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD)[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def iu(tmp_path_factory):
  """A converted random IU X-Ray R2Gen model, its release folder and its eval."""
  tmp = tmp_path_factory.mktemp("iu")
  root = tmp / "iu_xray"
  _write_release(root)
  tokenizer, rows = conv.build_tokenizer(REPORTS, "iu_xray", 1)
  sd = r2gen_state_dict(int(rows.max()) + 1, seed=1)
  workdir = tmp / "w"
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  orig = conv.read_checkpoint
  conv.read_checkpoint = lambda path, allow_pickle=False: (sd, {"epoch": 1, "monitor_best": 0.1})
  try:
    record = conv.convert("x.pth", str(root / "annotation.json"), "iu_xray", 1, str(workdir),
                          config=r2gen_configs.get_config("iu_xray"), num_heads=4,
                          rm_num_heads=2, max_seq_length=MAX_LEN)
  finally:
    conv.read_checkpoint = orig
  config = r2gen_configs.get_config("iu_xray")
  harness.apply_overrides(config, record["config_overrides"])
  config.data.data_dir = str(tmp / "tfds")
  config.data.num_workers = 0
  config.decode.batch_size = 2  # two global steps over the 3 test studies: one short batch
  config.card.num_cases = 0
  run_lib.evaluate_run(config, str(workdir), "test", card=True)
  rows = [json.loads(l) for l in (workdir / "eval" / "test_reports.jsonl").read_text(
      encoding="utf-8").splitlines()]
  return {"root": root, "workdir": workdir, "config": config, "rows": rows}


def test_release_build_stores_both_views(iu):
  prepared = dataset.prepare(iu["config"].data, 2)
  assert prepared.num_views == 2
  assert prepared.builder.builder_config.name == "release_en_iu_xray_split0_views2_px224"
  source = prepared.source("test")
  assert len(source) == SPLITS["test"]
  for i in range(len(source)):
    record = source[i]
    sid = record["id"].decode() if isinstance(record["id"], bytes) else record["id"]
    for v, key in enumerate(tfds_cncxr.image_keys(2)):
      stored = np.asarray(Image.open(io.BytesIO(record[key])))
      # the file at the training resize (the build stores it so)
      want = images.resize_gray(np.asarray(Image.open(iu["root"] / "images" / sid / f"{v}.png")),
                                iu["config"].data.image_size)
      np.testing.assert_array_equal(stored, want)
  assert tfds_cncxr.release_config(language="en", english_style="iu_xray").name == \
      "release_en_iu_xray_split0"  # one-view builds keep their names (and earlier builds)


def test_entry_with_fewer_views_is_a_bad_example(iu, tmp_path):
  ann = json.loads((iu["root"] / "annotation.json").read_text())
  ann["val"][1]["image_path"] = ann["val"][1]["image_path"][:1]
  (iu["root"] / "annotation.json").rename(tmp_path / "keep.json")
  try:
    (iu["root"] / "annotation.json").write_text(json.dumps(ann))
    with pytest.raises(release.BadExampleError,
                       match=r"val\[1\], id 'val1'.*lists 1 image\(s\).*2 views"):
      release.read_annotation(iu["root"], num_views=2)
    entries, skipped = release.read_annotation(iu["root"], num_views=2, skip_bad_examples=True)
    assert [s["id"] for s in skipped] == ["val1"] and len(entries["val"]) == 1
    assert len(release.read_annotation(iu["root"])[0]["val"]) == 2  # one view: both fine
  finally:
    (tmp_path / "keep.json").replace(iu["root"] / "annotation.json")
  with pytest.raises(dataset.DataConfigError, match="synthetic CN-CXR has one view"):
    dataset.builder_config(types.SimpleNamespace(name="synthetic"), 2)


def test_eval_batches_carry_both_views_as_pil_prepares_them(iu):
  config = iu["config"]
  prepared = dataset.prepare(config.data, 2)
  tokenizer = WordTokenizer.load(iu["workdir"] / "tokenizer")
  ds = pipeline.eval_dataset(prepared, "test", config.data, tokenizer, batch_size=3,
                             shard=pipeline.ProcessShard(0, 1))
  batch = next(iter(ds))
  size = config.data.crop_size
  assert batch["image"].shape == (3, 2, size, size, 1)
  for i, sid in enumerate(batch["id"]):
    for v in range(2):
      want = _reference_view(iu["root"] / "images" / str(sid) / f"{v}.png", size)
      np.testing.assert_allclose(batch["image"][i, v], want, atol=1e-5)



def _bad_studies(images, tmp) -> list[str]:
  """--images entries that must each give an error line, with what the line must say."""
  odd = tmp / "three"
  odd.mkdir()
  for v in range(3):
    (odd / f"{v}.png").write_bytes((images / "test0" / "0.png").read_bytes())
  broken = tmp / "broken"
  broken.mkdir()
  (broken / "0.png").write_bytes((images / "test0" / "0.png").read_bytes())
  (broken / "1.png").write_text("not a png")
  return {str(images / "test0" / "0.png"): "one file, but this model reads 2 views",
          str(odd): "exactly 2 images (this model reads 2 views a study), it holds 3: 0.png, "
                    "1.png, 2.png",
          f"{images / 'test0' / '0.png'}+{tmp / 'absent.png'}": "absent.png': no such file",
          str(broken): f"{broken / '1.png'}",
          str(tmp / "nowhere"): "no such file or folder"}


@pytest.fixture(scope="module")
def predicted(iu, tmp_path_factory):
  """One --mode=predict over the test studies as folders, as FRONTAL+LATERAL pairs, and studies
  that cannot be read, interleaved."""
  tmp = tmp_path_factory.mktemp("predict")
  images = iu["root"] / "images"
  sids = sorted(r["id"] for r in iu["rows"])
  folders = [str(images / sid) for sid in sids]
  joined = [f"{images / sid / '0.png'}+{images / sid / '1.png'}" for sid in sids]
  bad = _bad_studies(images, tmp)
  inputs = [x for pair in zip(folders + joined, list(bad) + [None]) for x in pair if x]
  out = tmp / "p.jsonl"
  code = predict.run_predict(iu["config"], str(iu["workdir"]), inputs, str(out),
                             log=lambda m: None)
  lines = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
  return dict(code=code, inputs=inputs, lines=dict(zip(inputs, lines)), folders=folders,
              joined=joined, bad=bad, sids=sids, order=[l["image"] for l in lines])


def test_eval_and_predict_write_the_same_reports(iu, predicted):
  """Three readers of the same studies: the eval pipeline (TFDS PNGs), predict on study folders
  and on FRONTAL+LATERAL files, and a beam search on the PIL-prepared arrays."""
  config, workdir, images = iu["config"], str(iu["workdir"]), iu["root"] / "images"
  by_id = {r["id"]: r["prediction"] for r in iu["rows"]}
  sids = predicted["sids"]
  assert sids == [f"test{i}" for i in range(SPLITS["test"])]
  assert predicted["order"] == predicted["inputs"]  # one line per entry, in input order
  for inputs in (predicted["folders"], predicted["joined"]):
    lines = [predicted["lines"][x] for x in inputs]
    assert [l["report"] for l in lines] == [by_id[sid] for sid in sids]
    assert [l["views"] for l in lines] == [[str(images / sid / f"{v}.png") for v in (0, 1)]
                                           for sid in sids]
  # What predict feeds the model: each study's files, in view order, prepared as PIL does.
  jobs = study_files.expand_studies(predicted["folders"] + predicted["joined"], 2)
  size = config.data.crop_size
  fed = predict._prepared(jobs, config.data)  # pylint: disable=protected-access
  for job, (_, array, error) in zip(jobs, fed):
    assert error is None and array.shape == (2, size, size, 1)
    sid = pathlib.Path(job.paths[0]).parent.name
    for v in (0, 1):
      np.testing.assert_allclose(array[v], _reference_view(images / sid / f"{v}.png", size),
                                 atol=1e-5)
  run = trained.load(config, workdir, log=lambda m: None)
  arrays = np.stack([np.stack([_reference_view(images / sid / f"{v}.png", size) for v in (0, 1)])
                     for sid in sids])
  _, ids, _, _ = run.generator.run_batch(run.variables, arrays[:2], np.arange(2))
  assert generate.decode_texts(run.tokenizer, ids) == [by_id[s] for s in sids[:2]]


def test_predict_studies_that_cannot_be_read_are_named(iu, predicted):
  assert predicted["code"] == 1  # some failed; the good studies are still reported
  for entry, says in predicted["bad"].items():
    line = predicted["lines"][entry]
    assert "report" not in line and says in line["error"], (entry, line)
  # A folder of study folders expands to each study in path order.
  images = iu["root"] / "images"
  jobs = study_files.expand_studies([str(images)], 2)
  assert [j.name for j in jobs] == sorted(str(p) for p in images.iterdir())
  assert all(j.error is None and len(j.paths) == 2 for j in jobs)


def test_side_by_side_maps_match_brute_force():
  rng = np.random.default_rng(0)
  views, h, w = 3, 2, 4
  flat = rng.random((5, 7, views * h * w))
  got = attention.side_by_side(flat, views, (h, w))
  assert got.shape == (5, 7, h, views * w)
  for v in range(views):
    for r in range(h):
      for c in range(w):
        np.testing.assert_array_equal(got[:, :, r, v * w + c], flat[:, :, v * h * w + r * w + c])


def test_card_shows_the_views_side_by_side(iu):
  html = (iu["workdir"] / "eval" / "test_card" / "index.html").read_text(encoding="utf-8")
  size = iu["config"].data.crop_size
  data = json.loads(re.search(r'<script type="application/json" id="att-1">(.*?)</script>',
                              html, re.S).group(1))
  grid = size // 32
  assert data["grid"] == [grid, 2 * grid]
  assert all(len(m) == grid * 2 * grid for m in data["maps"])
  png = re.search(r'id="case-1".*?src="data:image/png;base64,([^"]+)"', html, re.S).group(1)
  assert Image.open(io.BytesIO(base64.b64decode(png))).size == (2 * size, size)


def test_bench_decode_runs_the_two_view_workdir(iu):
  from cnx2rg_jax.bench import decode as bench  # pylint: disable=import-outside-toplevel
  from configs import bench_decode  # pylint: disable=import-outside-toplevel
  config = bench_decode.get_config()
  b = config.bench
  b.workdir, b.batches, b.max_lens, b.impls, b.repeats = (
      str(iu["workdir"]), [2], [4], ["cached"], 1)
  b.with_encoder = [True]
  out = bench.bench_decode(config)
  assert out["model"]["num_views"] == 2 and out["results"][0]["reports_per_sec"] > 0


def test_training_crops_each_view_on_its_own(iu):
  """Training batches carry both views, each cropped at its own random place (as R2Gen transforms
  each IU X-Ray view separately), re-derived here with PIL and the same random stream."""
  config = iu["config"]
  data = copy.deepcopy(config.data)
  data.image_size, data.crop_size = 64, 48
  prepared = dataset.prepare(data, 2)
  tokenizer = WordTokenizer.load(iu["workdir"] / "tokenizer")
  transform = pipeline.make_transform(data, tokenizer, prepared.report_cleaner, num_views=2)
  record = prepared.source("train")[0]
  differ = 0
  for seed in range(4):
    got = transform(record, np.random.default_rng(seed))["image"]
    rng = np.random.default_rng(seed)
    offsets = []
    for v, key in enumerate(tfds_cncxr.image_keys(2)):
      with Image.open(io.BytesIO(record[key])) as im:
        x = np.asarray(im.convert("L").resize((64, 64), Image.BILINEAR), np.float64)
      top, left = int(rng.integers(0, 64 - 48 + 1)), int(rng.integers(0, 64 - 48 + 1))
      offsets.append((top, left))
      want = (x[top:top + 48, left:left + 48] - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD
      np.testing.assert_allclose(got[v, ..., 0], want, atol=1e-4)
    differ += offsets[0] != offsets[1]
  assert differ, "the two views were always cropped at the same place"
  ds = pipeline.train_dataset(prepared, data, tokenizer, batch_size=2, seed=0,
                              shard=pipeline.ProcessShard(0, 1))
  assert next(iter(ds))["image"].shape == (2, 2, 48, 48, 1)
