"""Release builds store images at the training resize: the pipeline then gives exactly what
resizing the original files at read time gives, and a larger training size is refused."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax.data import dataset, pipeline, transforms
from configs import cnx2rg


def _release(root, n=10):
  """A release of 16-bit radiograph-sized images (not square), reports only."""
  rng = np.random.default_rng(0)
  (root / "images").mkdir(parents=True)
  entries = []
  for i in range(n):
    pixels = (rng.normal(size=(300, 260)).cumsum(0).cumsum(1) * 7 + 2000).clip(0, 4095)
    Image.fromarray(pixels.astype(np.uint16)).save(root / "images" / f"s{i}.png")
    entries.append({"id": f"s{i}", "report": "双肺纹理清晰。心影不大。", "image_path": [f"s{i}.png"]})
  (root / "annotation.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
  return root


def _config(tmp_path, root, **data):
  c = cnx2rg.get_config()
  d = c.data
  d.name, d.manual_dir, d.data_dir = "release", str(root), str(tmp_path / "tfds")
  d.image_size, d.crop_size, d.num_shards, d.num_workers = 64, 56, 1, 0
  for k, v in data.items():
    d[k] = v
  return c


def _png_shape(prepared):
  with Image.open(io.BytesIO(prepared.source("train")[0]["image"])) as im:
    return im.height, im.width


def _eval_images(prepared, data):
  source = prepared.source("train")
  tf = pipeline.make_transform(data, tokenizer=None, report_cleaner="zh")
  return {transforms.as_text(source[i]["id"]): tf.prepare_image(source[i], None)
          for i in range(len(source))}


def test_stored_resize_equals_resizing_the_file_at_read_time(tmp_path):
  root = _release(tmp_path / "rel")
  resized = dataset.prepare(_config(tmp_path, root).data)
  assert resized.builder.builder_config.name == "release_px64"
  assert _png_shape(resized) == (64, 64)  # the build holds 64x64 images, not 300x260
  original = dataset.prepare(_config(tmp_path, root, stored_image_size=0).data)
  assert original.builder.builder_config.name == "release"
  assert _png_shape(original) == (300, 260)
  data = _config(tmp_path, root).data
  a, b = _eval_images(resized, data), _eval_images(original, data)
  assert a.keys() == b.keys() and len(a) == 7
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
    # And both equal PIL's bilinear resize of the file, its 16 bits rescaled, re-derived here.
    with Image.open(root / "images" / f"{key}.png") as im:
      raw = np.asarray(im).astype(np.int64)
    lo, hi = raw.min(), raw.max()
    gray = ((raw - lo) * 255 * 2 + (hi - lo)) // (2 * (hi - lo))
    small = np.asarray(Image.fromarray(gray.astype(np.uint8)).resize((64, 64), Image.BILINEAR))
    crop = small[4:60, 4:60].astype(np.float32)
    np.testing.assert_allclose(a[key][..., 0], (crop - crop.mean()) / crop.std(), atol=1e-5)


def test_a_training_size_above_the_stored_one_is_refused(tmp_path):
  root = _release(tmp_path / "rel", n=10)
  with pytest.raises(dataset.DataConfigError, match="image_size=64.*stored_image_size=48"):
    dataset.builder_config(_config(tmp_path, root, stored_image_size=48).data)
  c = cnx2rg.get_config()
  c.data.image_size = 300
  with pytest.raises(dataset.DataConfigError, match="image_size=300.*synthetic_image_size=256"):
    dataset.builder_config(c.data)
