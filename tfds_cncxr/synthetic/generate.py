"""The synthetic CN-CXR: one study per (seed, index), each an image and its exact report.

Example `i` of a set with seed `s` depends only on (s, i), never on the set's size or the order of
generation, so studies can be generated in parallel and a larger set extends a smaller one.
Splits are 7:1:2 of a seeded permutation of the indices.
"""

from __future__ import annotations

import multiprocessing
from typing import Iterator

import numpy as np

from tfds_cncxr import release
from tfds_cncxr.synthetic import anatomy, findings as findings_lib, render, reports

# CN-CXR's demographics (paper, Sect. 3.1): 27,949 male, 23,109 female, 923 unknown; age
# 44.18 +/- 22.34 years.
_SEX_COUNTS = {"M": 27949, "F": 23109, "U": 923}
AGE_MEAN, AGE_STD = 44.18, 22.34
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def split_indices(num_examples: int, seed: int) -> dict[str, np.ndarray]:
  """Disjoint, complete 7:1:2 index sets, sorted within each split."""
  order = np.random.default_rng([seed, 0x5B17]).permutation(num_examples)
  n_train = round(SPLIT_FRACTIONS["train"] * num_examples)
  n_val = round(SPLIT_FRACTIONS["val"] * num_examples)
  return {"train": np.sort(order[:n_train]), "val": np.sort(order[n_train:n_train + n_val]),
          "test": np.sort(order[n_train + n_val:])}


def example_id(index: int) -> str:
  return f"syn{index:06d}"


# Age in years is 100 * Beta(a, b), with a and b chosen so that the mean and spread are the paper's
# exactly: a truncated normal would shift both, and a beta is skewed like a hospital population.
_AGE_M, _AGE_V = AGE_MEAN / 100.0, (AGE_STD / 100.0) ** 2
_AGE_A = _AGE_M * (_AGE_M * (1.0 - _AGE_M) / _AGE_V - 1.0)
_AGE_B = (1.0 - _AGE_M) * (_AGE_M * (1.0 - _AGE_M) / _AGE_V - 1.0)


def _demographics(rng: np.random.Generator) -> tuple[str, float]:
  sexes = list(_SEX_COUNTS)
  p = np.array([_SEX_COUNTS[s] for s in sexes], np.float64)
  sex = sexes[int(rng.choice(len(sexes), p=p / p.sum()))]
  return sex, float(max(1, round(100.0 * rng.beta(_AGE_A, _AGE_B))))


def make_study(seed: int, index: int, image_size: int = 256):
  """(patient, findings, report, sex, age) of study `index`; no pixels are drawn."""
  rng = np.random.default_rng([seed, index])
  sex, age = _demographics(rng)
  study_findings = findings_lib.sample_findings(rng)
  report = reports.write_report(study_findings, rng)
  patient = anatomy.sample_patient(rng, sex, age)
  return patient, study_findings, report, sex, age


def make_example(seed: int, index: int, image_size: int = 256) -> dict:
  """The TFDS feature dict of study `index` (image as PNG bytes)."""
  patient, study_findings, report, sex, age = make_study(seed, index, image_size)
  image = render.render_radiograph(patient, study_findings, image_size)
  return {
      "id": example_id(index),
      "image": release.encode_png(image),
      "report": report.text,
      "sex": sex,
      "age": np.float32(age),
      "keyword_labels": report.keyword_labels,
      "has_keyword_labels": True,
      "entities": [dict(e) for e in report.entities],
      "relations": [dict(r) for r in report.relations],
      "has_graph": True,
      "findings": [f.kind for f in study_findings],
  }


def _make_example_star(args):
  return make_example(*args)


def generate(indices, seed: int, image_size: int, num_workers: int = 0
             ) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) for `indices` in order, rendering on `num_workers` processes."""
  jobs = [(seed, int(i), image_size) for i in indices]
  if num_workers <= 1 or len(jobs) < 64:
    for job in jobs:
      ex = make_example(*job)
      yield ex["id"], ex
    return
  # spawn, not fork: the parent may already hold JAX's threads.
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    for ex in pool.imap(_make_example_star, jobs, chunksize=32):
      yield ex["id"], ex
