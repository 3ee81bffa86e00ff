"""How unlike the training images an input is: an out-of-distribution (OOD) score from the
trained model's own pooled encoder features (those the nearest-neighbour baseline retrieves by).

    u(x)      the image's pooled ResNet features scaled to unit length (a zero vector stays 0)
    d(x)      mean Euclidean distance from u(x) to its ood.k nearest rows of R
    score(x)  d(x) / median of d over the val split          (1 = a typical held-out study)
    flagged   score(x) > threshold, the ood.quantile quantile of the val scores

R holds the unit features of a seeded random subset of at most ood.max_reference training
studies (all of them when fewer), stored as float16; val studies (at most ood.max_reference,
seeded) are held out from training and from R, so they stand for new studies of the training
distribution: about a (1 - quantile) share of those is flagged. Dividing by the val median makes
scores of different runs comparable, whatever the scale of each encoder's features. The
threshold is an order statistic of the val scores (numpy's quantile, method "higher").

Files (written by --mode=train after training, by --mode=ood_reference for an existing run,
and by the R2Gen converter when given the training data):

    DIR/ood/reference.npy     float16 [M, D], the unit features R
    DIR/ood/val_scores.npy    float32 [n_val], the val scores the threshold was read from
    DIR/ood/ood.json          k, scale (the val median distance), threshold, quantile, the
                              checkpoint step the features come from, counts, feature width
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Callable, Iterator, Optional, Sequence

import jax
import numpy as np

from cnx2rg_jax import errors
from cnx2rg_jax.data import dataset, pipeline
from cnx2rg_jax.inference import generate

OOD_DIR = "ood"
REFERENCE_FILE = "reference.npy"
VAL_SCORES_FILE = "val_scores.npy"
SUMMARY_FILE = "ood.json"
DEFINITION = ("mean Euclidean distance of the L2-normalised pooled encoder features to the k "
              "nearest training-reference studies, divided by the median of that distance over "
              "the val split")


class OodError(errors.UserError):
  """The OOD reference cannot be computed (bad ood.* settings, no val studies); the message
  names the item."""


def check_config(ood) -> None:
  """Raises errors.ConfigError naming a bad ood.* value."""
  def bad(key, value, allowed):
    raise errors.ConfigError(f"config key ood.{key}={value!r} is not allowed: {allowed}. "
                             f"Fix it in the config file or with --config.ood.{key}=...")
  for key in ("k", "max_reference"):
    value = ood[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      bad(key, value, "it must be an integer >= 1")
  if ood.k > ood.max_reference:
    bad("k", ood.k, f"it must not exceed ood.max_reference={ood.max_reference}")
  q = ood.quantile
  if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
    bad("quantile", q, "it must be a number strictly between 0 and 1 (e.g. 0.99)")


# ----------------------------------------------------------------------------- the score


def unit_rows(features: np.ndarray) -> np.ndarray:
  """Rows scaled to unit Euclidean length, float32; a zero row stays zero."""
  x = np.asarray(features, np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def knn_distance(reference: np.ndarray, features: np.ndarray, k: int,
                 chunk: int = 1024) -> np.ndarray:
  """d(x) for each row of `features` [N, D] against the unit rows `reference` [M, D]: the mean
  Euclidean distance from the row's unit vector to its k nearest reference rows; float64 [N]."""
  ref = np.asarray(reference, np.float64)
  if features.ndim != 2 or features.shape[1] != ref.shape[1]:
    raise ValueError(f"features of shape {features.shape} do not match the reference's "
                     f"{ref.shape[1]} dims")
  k = min(k, len(ref))
  ref_sq = np.sum(ref * ref, axis=1)
  out = []
  for start in range(0, len(features), chunk):
    q = unit_rows(features[start:start + chunk]).astype(np.float64)
    sq = np.sum(q * q, axis=1, keepdims=True) + ref_sq[None] - 2.0 * q @ ref.T
    nearest = np.partition(np.maximum(sq, 0.0), k - 1, axis=1)[:, :k]
    out.append(np.sqrt(nearest).mean(axis=1))
  return np.concatenate(out) if out else np.zeros((0,), np.float64)


def sample_rows(count: int, limit: int, seed: int) -> np.ndarray:
  """A seeded random subset of at most `limit` of range(count), sorted (all when count <= limit)."""
  if count <= limit:
    return np.arange(count)
  return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


@dataclasses.dataclass
class Reference:
  """The stored summary of a run's training features and its val calibration."""

  features: np.ndarray  # float16 [M, D] unit rows
  k: int
  scale: float  # median of d over val
  threshold: float  # in score units
  quantile: float
  checkpoint_step: int
  num_train: int  # training studies of the split (the reference is a subset of them)
  num_val: int  # val studies calibrated on

  def scores(self, features: np.ndarray) -> np.ndarray:
    """score(x) of each row of `features` [N, D] (pooled encoder features), float64 [N]."""
    return knn_distance(self.features, np.asarray(features), self.k) / self.scale

  def summary(self) -> dict:
    return {"definition": DEFINITION, "k": self.k, "scale": self.scale,
            "threshold": self.threshold, "quantile": self.quantile,
            "checkpoint_step": self.checkpoint_step, "num_reference": len(self.features),
            "num_train": self.num_train, "num_val": self.num_val,
            "feature_dim": int(self.features.shape[1]), "dtype": "float16"}


def calibrate(train_features: np.ndarray, val_features: np.ndarray, *, k: int, quantile: float,
              checkpoint_step: int, num_train: int) -> tuple[Reference, np.ndarray]:
  """(reference, val scores) from the pooled features of the reference's training studies and
  of the val studies."""
  if len(val_features) == 0:
    raise OodError("the val split has no studies to calibrate the OOD score on")
  if len(train_features) == 0:
    raise OodError("the training split has no studies to use as the OOD reference")
  ref = unit_rows(train_features).astype(np.float16)
  distances = knn_distance(ref, np.asarray(val_features), k)
  scale = float(np.median(distances))
  if not scale > 0:
    raise OodError("the val studies' features coincide with the training reference (median "
                   "distance 0); the encoder gives no usable OOD score")
  scores = distances / scale
  threshold = float(np.quantile(scores, quantile, method="higher"))
  return Reference(ref, int(min(k, len(ref))), scale, threshold, float(quantile),
                   int(checkpoint_step), int(num_train), len(val_features)), scores


# ----------------------------------------------------------------------------- files


def save(workdir: str, reference: Reference, val_scores: np.ndarray) -> pathlib.Path:
  """DIR/ood/ (process 0 only); returns the folder."""
  folder = pathlib.Path(workdir) / OOD_DIR
  if jax.process_index() != 0:
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  np.save(folder / REFERENCE_FILE, np.asarray(reference.features, np.float16))
  np.save(folder / VAL_SCORES_FILE, np.asarray(val_scores, np.float32))
  (folder / SUMMARY_FILE).write_text(json.dumps(reference.summary(), indent=2) + "\n",
                                     encoding="utf-8")
  return folder


def load(workdir: str, checkpoint_step: int, feature_dim: Optional[int],
         how_to_make: str) -> tuple[Optional[Reference], Optional[str]]:
  """(reference, None) when DIR/ood/ fits the checkpoint in use (and `feature_dim`, the
  model's pooled feature width, when known), else (None, why not: one sentence ending in
  `how_to_make`)."""
  folder = pathlib.Path(workdir) / OOD_DIR
  if not (folder / SUMMARY_FILE).is_file():
    return None, (f"{workdir} has no OOD reference ({folder / SUMMARY_FILE} is missing: the run "
                  f"predates it); {how_to_make}")
  try:
    s = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    features = np.load(folder / REFERENCE_FILE)
    ref = Reference(features, int(s["k"]), float(s["scale"]), float(s["threshold"]),
                    float(s["quantile"]), int(s["checkpoint_step"]), int(s["num_train"]),
                    int(s["num_val"]))
  except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
    return None, f"the OOD reference in {folder} cannot be read ({e}); {how_to_make}"
  if ref.checkpoint_step != checkpoint_step:
    return None, (f"the OOD reference in {folder} was made with checkpoint step "
                  f"{ref.checkpoint_step}, but step {checkpoint_step} is in use; {how_to_make}")
  if features.ndim != 2 or (feature_dim is not None and features.shape[1] != feature_dim):
    return None, (f"the OOD reference in {folder} has features of shape {features.shape}, the "
                  f"model gives {feature_dim}; {how_to_make}")
  return ref, None


def flag_fields(reference: Optional[Reference], score: Optional[float],
                reason: Optional[str]) -> dict:
  """The OOD fields of an output line: ood_score, out_of_distribution (and, without a
  reference, ood_unavailable: why)."""
  if reference is None or score is None:
    return {"ood_score": None, "out_of_distribution": None, "ood_unavailable": reason}
  return {"ood_score": round(float(score), 4),
          "out_of_distribution": bool(score > reference.threshold)}


# A view whose gray levels vary less than this (of 0..255) holds no picture: the per-image
# z-score makes it all zeros, and the feature score alone need not flag it (README: limits).
BLANK_STD = 1.0
BLANK_WARNING = ("This image is blank (its pixels hardly vary), so there is nothing in it to "
                 "report on: its report is meaningless.")


def is_blank(views: Sequence[np.ndarray]) -> bool:
  """Whether any view (2-D uint8, as read) is blank: pixel standard deviation < BLANK_STD."""
  return any(float(np.std(np.asarray(v, np.float64))) < BLANK_STD for v in views)


def ood_warning(score: float, reference: Reference) -> str:
  return (f"This image is unlike the images the model was trained on (OOD score {score:.2f}, "
          f"above the threshold {reference.threshold:.2f} calibrated on held-out val studies), "
          "so its report is likely wrong.")


# ----------------------------------------------------------------------------- from a run


def _row_batches(source, indices: np.ndarray, prepare: Callable, local_batch: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(images, positions in `indices`) of this process's share of `indices`, as evaluation
  prepares them."""
  me, n = jax.process_index(), jax.process_count()
  mine = np.arange(me, len(indices), n)
  for start in range(0, len(mine), local_batch):
    rows = mine[start:start + local_batch]
    yield np.stack([prepare(source[int(indices[r])], None) for r in rows]), rows


def split_features(generator: generate.ReportGenerator, variables, prepared, split: str,
                   indices: Sequence[int], data) -> np.ndarray:
  """Pooled encoder features [len(indices), D] of `split`'s examples `indices`, in that order."""
  indices = np.asarray(indices, np.int64)
  prepare = pipeline.make_transform(data, None, prepared.report_cleaner,
                                    num_views=prepared.num_views).prepare_image
  per_process = math.ceil(len(indices) / jax.process_count())
  steps = max(1, math.ceil(per_process / generator.local_batch))
  out = generator.run_stream(variables, _row_batches(prepared.source(split), indices, prepare,
                                                     generator.local_batch),
                             steps, with_reports=False)
  return out.features


def compute(config, run, prepared: dataset.PreparedDataset,
            log: Callable[[str], None] = print) -> tuple[Reference, np.ndarray]:
  """The reference and val scores of `run` (inference.trained.TrainedRun) on `prepared`'s train
  and val splits, with config.ood's k, max_reference and quantile."""
  check_config(config.ood)
  o = config.ood
  n_train, n_val = prepared.num_examples("train"), prepared.num_examples("val")
  train_rows = sample_rows(n_train, o.max_reference, config.seed)
  val_rows = sample_rows(n_val, o.max_reference, config.seed + 1)
  if len(val_rows) == 0:
    raise OodError(f"the val split of {prepared.builder.builder_config.name} is empty; the OOD "
                   "threshold is calibrated on val studies")
  train = split_features(run.generator, run.variables, prepared, "train", train_rows,
                         config.data)
  val = split_features(run.generator, run.variables, prepared, "val", val_rows, config.data)
  ref, scores = calibrate(train, val, k=o.k, quantile=o.quantile, checkpoint_step=run.step,
                          num_train=n_train)
  log(f"OOD reference: {len(train_rows)} of {n_train} training studies, k {ref.k}; val median "
      f"distance {ref.scale:.4f} over {len(val_rows)} studies; threshold {ref.threshold:.3f} "
      f"(val quantile {ref.quantile:g})")
  return ref, scores
