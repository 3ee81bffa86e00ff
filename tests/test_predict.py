"""Tests for cnx2rg_jax.predict (--mode=predict) on a tiny run trained for two steps.

References are independent of the module under test: expected lines come from the input list as
written here, keyword labels from the rule labeler, and the model's report for an image from
the run's own generator fed an array preprocessed here with PIL and NumPy. One predict call on a
mixed list (read by several tests) keeps the compile time down.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax import predict
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.inference import generate, trained
from cnx2rg_jax.training import loop
from tests.conftest import tiny_model_config
from tests.helpers.dicom_files import write_dicom

RNG = np.random.default_rng(11)
PIXELS = RNG.integers(0, 256, (52, 46), dtype=np.uint8)  # not square, not image_size: resized
PIXELS[0, 0], PIXELS[0, 1] = 0, 255  # full range: DICOM min-max scaling leaves values alone
STORED12 = RNG.integers(0, 4096, (44, 44)).astype(np.uint16)


@pytest.fixture(scope="module")
def run_dir(tiny_synthetic, tmp_path_factory):
  """(config, workdir) of a tiny run trained for two steps."""
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.train.num_steps = 2  # keyword_weight as configured: the train step compiled (and
  # cached on disk) for tests/test_eval_mode.py is this one
  workdir = str(tmp_path_factory.mktemp("predict_run"))
  loop.train(config, workdir, log=lambda _: None)
  return config, workdir


def _with_keyword_weight(config, weight: float):
  c = config.copy_and_resolve_references()
  c.train.keyword_weight = weight  # no shape depends on it: the same checkpoint loads
  return c


@pytest.fixture(scope="module")
def mixed(run_dir, tmp_path_factory):
  """One predict call on good and bad files: (inputs, expected paths, lines, log, exit code)."""
  config, workdir = run_dir
  d = tmp_path_factory.mktemp("images")
  Image.fromarray(PIXELS).save(d / "same.png")
  Image.fromarray(PIXELS).save(d / "photo.jpg", quality=90)
  write_dicom(d / "same8.dcm", PIXELS, bits_stored=8)
  write_dicom(d / "inverted_mono1.dcm", 255 - PIXELS, "MONOCHROME1", bits_stored=8)
  write_dicom(d / "window16.dcm", STORED12, WindowCenter=2000.0, WindowWidth=2500.0)
  write_dicom(d / "mono1_16.dcm", STORED12, "MONOCHROME1", WindowCenter=1800.0,
              WindowWidth=3000.0)
  (d / "text.png").write_text("not an image\n")
  (d / "truncated.png").write_bytes((d / "same.png").read_bytes()[:200])
  folder = d / "folder"
  (folder / "sub").mkdir(parents=True)
  Image.fromarray(255 - PIXELS).save(folder / "a.png")
  write_dicom(folder / "b.dcm", STORED12)
  Image.fromarray(PIXELS[::2]).save(folder / "sub" / "c.jpg")
  (folder / "notes.txt").write_text("skipped: not an image suffix")
  names = ["same.png", "photo.jpg", "window16.dcm", "text.png", "same8.dcm", "missing.png",
           "folder", "truncated.png", "inverted_mono1.dcm", "mono1_16.dcm", "same.png"]
  inputs = [str(d / n) for n in names]
  expected = []
  for n in names:
    expected += ([str(folder / "a.png"), str(folder / "b.dcm"), str(folder / "sub" / "c.jpg")]
                 if n == "folder" else [str(d / n)])
  out = d / "results" / "nested" / "pred.jsonl"  # parent folders do not exist yet
  log: list[str] = []
  code = predict.run_predict(_with_keyword_weight(config, 0.5), workdir, inputs, str(out),
                             log=log.append)
  lines = [json.loads(s) for s in out.read_text(encoding="utf-8").splitlines()]
  return inputs, expected, lines, log, code


BAD = ("text.png", "missing.png", "truncated.png")


def test_mixed_files_one_line_each_in_order(mixed):
  _, expected, lines, log, code = mixed
  assert code == 1
  assert [line["image"] for line in lines] == expected
  for line in lines:
    bad = line["image"].endswith(BAD)
    assert ("error" in line) == bad and ("report" in line) != bad, line
    if bad:
      assert line["image"] in line["error"] and line["error"] in log
    else:
      assert isinstance(line["report"], str) and line["report"]
      assert line["keywords"] == label_report(line["report"]).keywords
  n_bad = sum(line["image"].endswith(BAD) for line in lines)
  assert n_bad == 3 and log[-1].startswith(f"predicted {len(lines) - 3} reports (3 failed) -> ")


def _report_of(lines, suffix: str) -> str:
  (report,) = {line["report"] for line in lines if line["image"].endswith(suffix)}
  return report


def test_same_pixels_same_report_whatever_the_format(mixed, run_dir):
  _, _, lines, _, _ = mixed
  config, workdir = run_dir
  png = _report_of(lines, "same.png")  # given twice: one report for both
  assert _report_of(lines, "same8.dcm") == png
  assert _report_of(lines, "inverted_mono1.dcm") == png
  # The generator on pixels preprocessed here as evaluation does: resize, center crop, z-score.
  data = config.data
  assert data.normalization == "zscore"
  resized = np.asarray(Image.fromarray(PIXELS).resize((data.image_size,) * 2, Image.BILINEAR),
                       np.float32)
  top = (data.image_size - data.crop_size) // 2
  crop = resized[top:top + data.crop_size, top:top + data.crop_size]
  x = ((crop - crop.mean()) / crop.std())[None, ..., None]
  run = trained.load(config, workdir, log=lambda _: None)
  _, ids, probs, _ = run.generator.run_batch(run.variables, x, np.array([0]))
  assert generate.decode_texts(run.tokenizer, ids) == [png]
  (line,) = [line for line in lines if line["image"].endswith("same8.dcm")]
  np.testing.assert_allclose(list(line["keyword_probs"].values()), probs[0], atol=1e-4)


def test_keyword_probs_when_keyword_weight_positive(mixed):
  _, _, lines, _, _ = mixed
  for line in lines:
    if "report" in line:
      probs = line["keyword_probs"]
      assert list(probs) == list(kw.KEYWORD_KEYS) and len(probs) == 48
      assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_stdout_without_keyword_probs(run_dir, tmp_path, capsys):
  config, workdir = run_dir
  Image.fromarray(PIXELS).save(tmp_path / "x.png")
  log: list[str] = []
  code = predict.run_predict(_with_keyword_weight(config, 0.0), workdir,
                             [str(tmp_path / "x.png")], "", log=log.append)
  (line,) = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
  assert code == 0 and line["image"] == str(tmp_path / "x.png")
  assert "keyword_probs" not in line and line["keywords"] == label_report(line["report"]).keywords
  assert log[-1] == "predicted 1 reports (0 failed) -> stdout"


def test_no_images_exit_code_2(run_dir, capsys):
  config, workdir = run_dir
  log: list[str] = []
  assert predict.run_predict(config, workdir, [], log=log.append) == 2
  assert "--images" in log[0] and capsys.readouterr().out == ""


def test_nothing_readable_still_writes_errors(run_dir, tmp_path):
  config, workdir = run_dir
  out = tmp_path / "errors.jsonl"
  missing = [str(tmp_path / "gone.png"), str(tmp_path / "gone.dcm")]
  assert predict.run_predict(config, workdir, missing, str(out), log=lambda _: None) == 1
  lines = [json.loads(s) for s in out.read_text(encoding="utf-8").splitlines()]
  assert [line["image"] for line in lines] == missing
  assert all(line["image"] in line["error"] for line in lines)
