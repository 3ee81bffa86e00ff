"""Provenance and the out-of-distribution score on --mode=predict and --mode=eval outputs
(cnx2rg_jax/inference/).

The model is the tiny two-step run of tests/test_predict.py (the same compiled programs). Its
OOD reference is calibrated on a 400-study build of the same synthetic generator (280 training
studies as the reference, 40 val), so that the test split (80 studies) is large enough for a
flag rate to mean something; the 60-study build the model trained on has 6 val studies. Val and
test studies are exchangeable (held out from training and from the reference alike), so the
number of test studies above the j-th largest of n val scores follows a beta-binomial
distribution, computed here exactly. Scores are re-derived in NumPy from the stored reference
and the encoder's features; the kinds of other images are named in each assertion.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax import config_checks, predict, run as run_lib
from cnx2rg_jax.data import dataset
from cnx2rg_jax.evaluation import reports_io
from cnx2rg_jax.inference import ood, provenance, run_facts, trained
from cnx2rg_jax.training import loop
from tests.conftest import tiny_model_config
from tests.helpers.dicom_files import write_dicom
from tfds_cncxr.synthetic import generate as synthetic

REFERENCE_STUDIES = 400
OTHER_SEED = 12345  # a synthetic study of another generator seed: in distribution as drawn


def _png_pixels(data: bytes) -> np.ndarray:
  import io  # pylint: disable=import-outside-toplevel
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("L"))


def _pink_noise(rng, size: int = 256) -> np.ndarray:
  """Noise with a natural photograph's 1/f amplitude spectrum, stretched to 0..255."""
  fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None]
  f = np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1.0 / size)
  img = np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f,
                      s=(size, size))
  return (img - img.min()) / (img.max() - img.min()) * 255


def _photograph_like(seed: int) -> np.ndarray:
  """A photograph-like scene: a 1/f background with flat bright and dark objects."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:256, :256] / 256.0
  img = 0.5 * _pink_noise(rng)
  for _ in range(5):
    cy, cx, s, value = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2), \
        rng.uniform(0, 255)
    if rng.random() < 0.5:
      img = np.where((abs(y - cy) < s) & (abs(x - cx) < s * rng.uniform(0.5, 2)), value, img)
    else:
      img = np.where((y - cy) ** 2 + (x - cx) ** 2 < s * s, value, img)
  return np.clip(img, 0, 255).astype(np.uint8)


def _other_images(test_pixels: list) -> dict[str, list[np.ndarray]]:
  """Images of kinds the model never saw, by kind."""
  rng = np.random.default_rng(5)
  other_seed = [_png_pixels(synthetic.make_example(OTHER_SEED, i, 256)["image"])
                for i in range(6)]
  return {
      "blank": [np.full((256, 256), 0, np.uint8), np.full((256, 256), 200, np.uint8)],
      "noise": [rng.integers(0, 256, (256, 256), dtype=np.uint8) for _ in range(3)],
      "1/f noise": [_pink_noise(rng).astype(np.uint8) for _ in range(3)],
      "photograph-like": [_photograph_like(seed) for seed in range(3)],
      "upside down": [t[::-1] for t in test_pixels[:4]],
      "rotated 90": [np.rot90(t).copy() for t in test_pixels[:4]],
      # other generator seed, contrast inverted (a MONOCHROME1 image read as MONOCHROME2)
      "other seed, inverted": [255 - p for p in other_seed[:3]],
      "other seed, inverted and gamma 2": [
          (255 * (1 - p / 255.0) ** 2).astype(np.uint8) for p in other_seed[3:]],
      # controls, reported but not asserted flagged: see test_other_kinds_are_flagged
      "other seed as drawn": other_seed,
      "mirrored left-right": [t[:, ::-1] for t in test_pixels[:4]],
      "other seed, gamma 3": [(255 * (p / 255.0) ** 3).astype(np.uint8) for p in other_seed],
  }


@pytest.fixture(scope="module")
def ood_run(tiny_synthetic, tmp_path_factory):
  """The tiny run with its provenance and an OOD reference from the larger build, and one
  predict call over the test split, other kinds of images and DICOM copies."""
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.train.num_steps = 2  # tests/test_predict.py's run: its compiled programs are cached
  workdir = tmp_path_factory.mktemp("ood_run")
  config_checks.write_config(config, str(workdir))
  loop.train(config, str(workdir), log=lambda _: None)
  run = trained.load(config, str(workdir), log=lambda _: None)
  small = dataset.prepare(config.data)
  provenance.write(str(workdir), provenance.trained_on(config, small), run.step, run.chosen_by)
  big = config.copy_and_resolve_references()
  big.data.num_examples = REFERENCE_STUDIES
  prepared = dataset.prepare(big.data)
  reference, val_scores = ood.compute(big, run, prepared, log=lambda _: None)
  ood.save(str(workdir), reference, val_scores)

  d = tmp_path_factory.mktemp("ood_images")
  source = prepared.source("test")
  test_pixels = [_png_pixels(source[i]["image"]) for i in range(len(source))]
  names = {"test": []}
  for i in range(len(source)):
    (d / f"test{i:03d}.png").write_bytes(source[i]["image"])
    names["test"].append(f"test{i:03d}.png")
  for kind, images in _other_images(test_pixels).items():
    names[kind] = []
    for j, pixels in enumerate(images):
      name = f"{''.join(c if c.isalnum() else '_' for c in kind)}_{j}.png"
      Image.fromarray(pixels).save(d / name)
      names[kind].append(name)
  names["dicom"] = []
  for i in range(3):  # test images as 8-bit DICOM and PNG; full range: DICOM reading
    pixels = test_pixels[i].copy()  # stretches min..max to 0..255, which leaves these alone
    pixels[0, 0], pixels[0, 1] = 0, 255
    write_dicom(d / f"same{i}.dcm", pixels, bits_stored=8)
    Image.fromarray(pixels).save(d / f"same{i}.png")
    names["dicom"] += [f"same{i}.dcm", f"same{i}.png"]
  order = [n for kind in names.values() for n in kind]
  log: list[str] = []
  out = d / "pred.jsonl"
  card = d / "card"
  config.card.num_cases = 2
  code = predict.run_predict(config, str(workdir), [str(d / n) for n in order], str(out),
                             log=log.append, card_dir=str(card))
  lines = {pathlib.Path(l["image"]).name: l
           for l in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
  return {"config": config, "workdir": workdir, "run": run, "prepared": prepared,
          "reference": reference, "val_scores": val_scores, "names": names, "lines": lines,
          "log": log, "code": code, "card": card / "index.html", "test_pixels": test_pixels,
          "small": small}


def _beta_binomial_cdf(m: int, a: float, b: float) -> np.ndarray:
  """P(X <= x), x = 0..m, for X ~ BetaBinomial(m, a, b)."""
  def log_beta(p, q):
    return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)
  pmf = [math.exp(math.lgamma(m + 1) - math.lgamma(x + 1) - math.lgamma(m - x + 1)
                  + log_beta(x + a, m - x + b) - log_beta(a, b)) for x in range(m + 1)]
  return np.cumsum(pmf)


def test_test_split_flag_rate_is_the_calibrated_rate(ood_run):
  """For the saved quantile and two more, the count of test studies above the val threshold
  lies inside the central 99.8 % of its beta-binomial law (Bonferroni over the three)."""
  scores = np.array([ood_run["lines"][n]["ood_score"] for n in ood_run["names"]["test"]])
  val = np.sort(ood_run["val_scores"].astype(np.float64))
  n, m = len(val), len(scores)
  assert (n, m) == (40, 80)
  for q in (0.5, 0.9, ood_run["reference"].quantile):
    j = math.ceil(q * (n - 1))  # numpy's "higher" quantile is the sorted value at this index
    threshold = np.quantile(val, q, method="higher")
    assert threshold == val[j]
    count = int(np.sum(scores > threshold + 1e-4))  # line scores are rounded to 4 decimals
    cdf = _beta_binomial_cdf(m, a=n - j, b=j + 1)
    lo, hi = int(np.searchsorted(cdf, 0.001 / 3)), int(np.searchsorted(cdf, 1 - 0.001 / 3))
    assert lo <= count <= hi, (q, count, lo, hi)
  flags = [ood_run["lines"][n]["out_of_distribution"] for n in ood_run["names"]["test"]]
  assert flags == [s > ood_run["reference"].threshold for s in scores]


def test_other_kinds_are_flagged(ood_run):
  """Blank, noise, photograph-like, upside-down, rotated and contrast-inverted images are all
  flagged. A two-step model does not separate left-right mirrored radiographs or a gamma-only
  contrast change (README: limits); those and unchanged studies of another seed are reported,
  and the unchanged ones must mostly pass."""
  lines, names = ood_run["lines"], ood_run["names"]
  flagged = {kind: [lines[n]["out_of_distribution"] for n in names[kind]]
             for kind in names if kind not in ("test", "dicom")}
  print({kind: f"{sum(f)}/{len(f)}" for kind, f in flagged.items()})  # pytest -s: what is flagged
  for kind in ("blank", "noise", "1/f noise", "photograph-like", "upside down", "rotated 90",
               "other seed, inverted", "other seed, inverted and gamma 2"):
    assert all(flagged[kind]), (kind, [lines[n]["ood_score"] for n in names[kind]])
    for n in names[kind]:
      assert "unlike the images the model was trained on" in lines[n]["warning"]
      assert lines[n]["report"] is not None  # flagged lines keep their report
  assert sum(flagged["other seed as drawn"]) <= 1, flagged["other seed as drawn"]
  # Blank images are flagged by the contrast check too (the demo model's features alone do not
  # flag them: README), and only they.
  for kind in names:
    for n in names[kind]:
      assert lines[n].get("blank_image", False) is (kind == "blank"), n
      assert (ood.BLANK_WARNING in lines[n]["warning"]) is (kind == "blank"), n


def test_blank_is_a_view_without_contrast():
  flat = np.full((20, 20), 90, np.uint8)
  faint = flat.copy()
  faint[::2] += 2  # std exactly 1 gray level: a picture, however faint
  assert ood.is_blank([flat]) and not ood.is_blank([faint])
  assert ood.is_blank([faint, flat])  # a study with one blank view


def test_same_pixels_same_score_png_and_dicom(ood_run):
  lines = ood_run["lines"]
  for dcm in ood_run["names"]["dicom"][::2]:
    png = dcm.replace(".dcm", ".png")
    assert lines[dcm]["ood_score"] == lines[png]["ood_score"]
    assert lines[dcm]["report"] == lines[png]["report"]


def test_score_is_a_numpy_rederivation(ood_run):
  """score = mean distance of the unit features to the k nearest stored reference rows over the
  val median, recomputed by brute force from the encoder's features; the stored reference rows
  are the unit features of the sampled training studies; the threshold is the quantile."""
  run, config, prepared = ood_run["run"], ood_run["config"], ood_run["prepared"]
  saved = np.load(ood_run["workdir"] / ood.OOD_DIR / ood.REFERENCE_FILE)
  summary = json.loads((ood_run["workdir"] / ood.OOD_DIR / ood.SUMMARY_FILE).read_text())
  val_scores = np.load(ood_run["workdir"] / ood.OOD_DIR / ood.VAL_SCORES_FILE)
  assert saved.dtype == np.float16 and saved.shape[0] == summary["num_reference"] == 280
  assert summary["k"] == config.ood.k and summary["checkpoint_step"] == run.step
  assert np.median(val_scores) == pytest.approx(1.0, abs=1e-6)
  assert summary["threshold"] == pytest.approx(
      float(np.sort(val_scores)[math.ceil(config.ood.quantile * (len(val_scores) - 1))]),
      rel=1e-6)
  names = ood_run["names"]["test"][:4] + ood_run["names"]["noise"][:1]
  images = np.stack([predict.preprocess(np.asarray(Image.open(
      pathlib.Path(ood_run["lines"][n]["image"])).convert("L")), config.data) for n in names])
  _, _, _, feats = run.generator.run_batch(run.variables, images, np.arange(len(images)),
                                           with_reports=False)
  ref = saved.astype(np.float64)
  for n, f in zip(names, feats.astype(np.float64)):
    u = f / np.linalg.norm(f)
    dist = sorted(np.sqrt(np.sum((r - u) ** 2)) for r in ref)
    expected = np.mean(dist[:summary["k"]]) / summary["scale"]
    assert ood_run["lines"][n]["ood_score"] == pytest.approx(expected, abs=2e-4), n
  # Reference rows: the sampled training studies' unit features.
  rows = ood.sample_rows(prepared.num_examples("train"), config.ood.max_reference, config.seed)
  train_images = np.stack([predict.preprocess(_png_pixels(
      prepared.source("train")[int(i)]["image"]), config.data) for i in rows[:4]])
  _, _, _, tf = run.generator.run_batch(run.variables, train_images, np.arange(4),
                                        with_reports=False)
  tf = tf / np.linalg.norm(tf, axis=1, keepdims=True)
  np.testing.assert_allclose(ref[:4], tf, atol=2e-3)


def test_lines_carry_provenance_and_the_synthetic_warning(ood_run):
  lines, run = ood_run["lines"], ood_run["run"]
  assert ood_run["code"] == 0
  line = lines[ood_run["names"]["test"][0]]
  small = ood_run["small"]
  assert line["trained_on"] == {
      "dataset": "cncxr", "config": "synthetic", "build": small.builder.builder_config.name,
      "train_studies": small.num_examples("train"), "language": "zh", "synthetic": True,
      "source": "synthetic generator, seed 0", "recorded": True}
  assert line["checkpoint_step"] == run.step == 2
  for l in lines.values():
    assert l["warning"].startswith(provenance.SYNTHETIC_WARNING)
  warnings = [x for x in ood_run["log"] if provenance.SYNTHETIC_WARNING in x]
  assert len(warnings) == 1 and not any(x.startswith("notice:") for x in ood_run["log"])
  # config.json points to provenance.json and still reads as the run's config
  saved = json.loads((ood_run["workdir"] / "config.json").read_text())
  assert saved["provenance"] == provenance.PROVENANCE_FILE
  config_checks.check_workdir(ood_run["config"], str(ood_run["workdir"]))
  page = ood_run["card"].read_text(encoding="utf-8")
  assert "trained on" in page and small.builder.builder_config.name in page
  assert "are not a diagnosis" in page and "OOD score" in page


def test_older_workdir_predicts_with_null_score_then_gets_a_reference(ood_run, tmp_path):
  """A workdir without DIR/ood/ and provenance.json (made before them) still predicts, with
  ood_score null, why, and one notice; --mode=ood_reference then writes both."""
  old = tmp_path / "old"
  shutil.copytree(ood_run["workdir"], old, ignore=shutil.ignore_patterns(
      ood.OOD_DIR, provenance.PROVENANCE_FILE))
  config = ood_run["config"]
  images = [ood_run["lines"][n]["image"] for n in ood_run["names"]["test"][:2]]
  log: list[str] = []
  assert predict.run_predict(config, str(old), images, str(tmp_path / "p.jsonl"),
                             log=log.append) == 0
  lines = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
  for line in lines:
    assert line["ood_score"] is None and line["out_of_distribution"] is None
    assert "has no OOD reference" in line["ood_unavailable"]
    assert "--mode=ood_reference" in line["ood_unavailable"]
    assert line["trained_on"]["recorded"] is False and line["trained_on"]["synthetic"]
    assert line["report"] == ood_run["lines"][pathlib.Path(line["image"]).name]["report"]
  assert len([x for x in log if x.startswith("notice:")]) == 1
  asked = config.copy_and_resolve_references()
  asked.ood.enabled = False  # that switch is for training; asking for a reference makes one
  assert run_lib.main(asked, workdir=str(old), mode="ood_reference", split="test", images=[],
                      output="") == 0
  facts = run_facts.RunFacts.of(config, str(old), ood_run["run"])
  assert facts.reference is not None and facts.reference.num_train == 42
  assert facts.fields["trained_on"]["recorded"] is True
  # A reference of another checkpoint step is refused, naming both steps.
  summary = json.loads((old / ood.OOD_DIR / ood.SUMMARY_FILE).read_text())
  summary["checkpoint_step"] = 7
  (old / ood.OOD_DIR / ood.SUMMARY_FILE).write_text(json.dumps(summary))
  ref, why = ood.load(str(old), 2, None, "recompute")
  assert ref is None and "checkpoint step 7, but step 2 is in use" in why


def test_eval_reports_carry_provenance_and_scores(ood_run):
  """--mode=eval's report lines gain the fields; the score CLI's reader still reads them."""
  config, workdir = ood_run["config"], str(ood_run["workdir"])
  run_lib.evaluate_run(config, workdir, "val", run=ood_run["run"])
  path = pathlib.Path(workdir) / "eval" / "val_reports.jsonl"
  rows = reports_io.read_prediction_lines(str(path))
  raw = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
  assert len(rows) == len(raw) == ood_run["small"].num_examples("val")
  for line in raw:
    assert line["checkpoint_step"] == 2 and line["trained_on"]["synthetic"]
    assert isinstance(line["ood_score"], float) and "warning" in line


def test_bad_ood_settings_name_the_key():
  from configs import cnx2rg  # pylint: disable=import-outside-toplevel
  c = cnx2rg.get_config()
  ood.check_config(c.ood)
  for key, value, words in (("k", 0, "ood.k=0"), ("quantile", 1.0, "ood.quantile=1.0"),
                            ("max_reference", -1, "ood.max_reference=-1"),
                            ("k", 5000, "must not exceed ood.max_reference")):
    bad = c.copy_and_resolve_references()
    bad.ood[key] = value
    with pytest.raises(config_checks.ConfigError, match=words):
      ood.check_config(bad.ood)
