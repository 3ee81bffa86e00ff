"""A converted R2Gen checkpoint's provenance and OOD reference (cnx2rg_jax/convert/r2gen.py,
cnx2rg_jax/inference/): without training data its outputs say why there is no OOD score; with
--ood_data the reference is the converted encoder's features of the folder's training images,
re-derived here. A random MIMIC-CXR-shaped state dict stands in for R2Gen's file (no torch, no
R2Gen checkout)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax.convert import r2gen as conv
from cnx2rg_jax.data import dataset
from cnx2rg_jax.inference import ood, provenance, run_facts, trained
from tests.helpers import r2gen_harness as harness
from tests.helpers.r2gen_state import r2gen_state_dict

REPORTS = ["the heart is normal . no effusion .", "lungs are clear .",
           "mild cardiomegaly . no pneumothorax .", "no focal consolidation . heart normal ."]
SPLITS = {"train": 6, "val": 4, "test": 1}
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449 * 255, 0.226 * 255


def _write_release(root) -> dict:
  """A tiny R2Gen-layout folder; returns the training images' pixels by entry order."""
  rng = np.random.default_rng(3)
  data, train_pixels = {}, []
  for split, n in SPLITS.items():
    data[split] = []
    for i in range(n):
      pixels = rng.integers(0, 256, (40, 48), dtype=np.uint8)
      path = root / "images" / f"{split}{i}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(pixels).save(path)
      data[split].append({"id": f"{split}{i}", "report": REPORTS[i % len(REPORTS)],
                          "image_path": [f"{split}{i}.png"]})
      if split == "train":
        train_pixels.append(pixels)
  (root / "annotation.json").write_text(json.dumps(data))
  return {"train": train_pixels}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("r2gen_ood")
  root = tmp / "mimic"
  pixels = _write_release(root)
  train_reports = [REPORTS[i % len(REPORTS)] for i in range(SPLITS["train"])]
  _, rows = conv.build_tokenizer(train_reports, "mimic_cxr", 1)
  sd = r2gen_state_dict(int(rows.max()) + 1, seed=2)
  orig = conv.read_checkpoint
  conv.read_checkpoint = lambda path, allow_pickle=False: (sd, {"epoch": 4, "monitor_best": 0.1})
  try:
    code = conv.main(["--checkpoint=x.pth", f"--annotation={root / 'annotation.json'}",
                      "--dataset=mimic_cxr", "--threshold=1", f"--workdir={tmp / 'with_ood'}",
                      "--num_heads=4", "--rm_num_heads=2", f"--ood_data={root}",
                      f"--data_dir={tmp / 'tfds'}"])
  finally:
    conv.read_checkpoint = orig
  record = json.loads((tmp / "with_ood" / "r2gen_conversion.json").read_text())
  # What the conversion without --ood_data writes: the same files, DIR/ood/ aside.
  shutil.copytree(tmp / "with_ood", tmp / "plain", ignore=shutil.ignore_patterns(ood.OOD_DIR))
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  config = r2gen_configs.get_config("mimic_cxr")
  harness.apply_overrides(config, record["config_overrides"])
  config.data.data_dir = str(tmp / "tfds")
  # Both workdirs hold the same checkpoint: one load serves both.
  run = trained.load(config, str(tmp / "with_ood"), log=lambda _: None)
  return {"run": run, "tmp": tmp, "root": root, "config": config, "record": record, "code": code,
          "pixels": pixels}


def test_without_training_data_the_score_is_unavailable_and_says_why(converted):
  config, workdir = converted["config"], str(converted["tmp"] / "plain")
  run = converted["run"]
  facts = run_facts.RunFacts.of(config, workdir, run)
  assert facts.reference is None
  assert "converted R2Gen checkpoint carries no training features" in facts.unavailable
  assert "--ood_data=FOLDER" in facts.unavailable
  [line] = facts.line_fields(np.ones((1, 512), np.float32))
  assert line["ood_score"] is None and line["out_of_distribution"] is None
  assert line["ood_unavailable"] == facts.unavailable
  trained_on = line["trained_on"]
  assert trained_on["dataset"] == "mimic_cxr (R2Gen checkpoint)"
  assert trained_on["train_studies"] == SPLITS["train"] and trained_on["language"] == "en"
  assert trained_on["synthetic"] is False and "warning" not in line  # real images: no warning
  assert "epoch 4" in trained_on["source"] and line["checkpoint_step"] == 0
  assert json.loads((converted["tmp"] / "plain" / "config.json").read_text())[
      "provenance"] == provenance.PROVENANCE_FILE


def test_ood_data_writes_the_reference_of_the_training_images(converted):
  """The reference rows are the unit pooled features of the training images as R2Gen's eval
  transform prepares them (resize to 224, ImageNet statistics), re-derived with PIL here."""
  assert converted["code"] == 0
  assert converted["record"]["ood_reference"] == str(converted["tmp"] / "with_ood" / ood.OOD_DIR)
  config, workdir = converted["config"], str(converted["tmp"] / "with_ood")
  run = converted["run"]
  facts = run_facts.RunFacts.of(config, workdir, run)
  ref = facts.reference
  assert ref is not None and ref.num_train == SPLITS["train"] and ref.num_val == SPLITS["val"]
  assert facts.fields["trained_on"]["dataset"] == "mimic_cxr (R2Gen checkpoint)"
  ood_config = config.copy_and_resolve_references()
  ood_config.data.manual_dir = str(converted["root"])
  ids = dataset.read_split_texts(dataset.prepare(ood_config.data), "train").ids  # build order
  images = []
  for pixels in [converted["pixels"]["train"][int(i.removeprefix("train"))] for i in ids]:
    x = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.BILINEAR), np.float64)
    images.append(((x - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD)[..., None])
  images = np.stack(images).astype(np.float32)
  _, _, _, feats = run.generator.run_batch(run.variables, images[:4], np.arange(4),
                                           with_reports=False)
  feats = feats.astype(np.float64)  # a random R2Gen ResNet gives huge features
  expected = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  np.testing.assert_allclose(ref.features[:4].astype(np.float64), expected, atol=2e-3)
  val = np.load(converted["tmp"] / "with_ood" / ood.OOD_DIR / ood.VAL_SCORES_FILE)
  assert len(val) == SPLITS["val"] and np.median(val) == pytest.approx(1.0, abs=1e-6)
