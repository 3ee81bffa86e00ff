"""The studies of `--mode=predict --images=...`: which image files go to the model together.

A model that reads one image a study (model.num_views = 1, every CN-X2RG config) takes each
image file as a study: `data.image_files.expand_paths` lists them, folders walked recursively.

A model that reads V > 1 views a study (R2Gen's IU X-Ray checkpoints: frontal, then lateral)
takes, for each entry of --images:

  - "A.png+B.png": one study of exactly these V files, in this order;
  - a folder that holds image files itself: one study, its V image files sorted by name (R2Gen's
    IU X-Ray folders hold 0.png and 1.png);
  - a folder that holds none itself: every folder under it that does, each one study, in path
    order (so the `images/` folder of an IU X-Ray release predicts every study in it).

Anything else (a single file, a folder of the wrong number of images, a missing path) becomes
one study carrying an error that names it and says what to pass instead; the others go on.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from cnx2rg_jax.data import image_files

VIEW_JOIN = "+"  # joins the files of one study: FRONTAL.png+LATERAL.png


@dataclasses.dataclass(frozen=True)
class StudyJob:
  """One study to read: its name in the output (the file, the folder, or the '+'-joined files),
  its view files in order, and `error` (a full message) when it is known to be unusable."""
  name: str
  paths: tuple[str, ...]
  error: Optional[str] = None


def _own_images(folder: str) -> list[str]:
  """The image files directly in `folder` (not hidden), sorted by name."""
  try:
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and n.lower().endswith(image_files.IMAGE_SUFFIXES)
                   and os.path.isfile(os.path.join(folder, n)))
  except OSError:
    return []
  return [os.path.join(folder, n) for n in names]


def _error(name: str, reason: str, fix: str) -> StudyJob:
  return StudyJob(name, (), f"cannot read study {name!r}: {reason}. To fix: {fix}.")


def _folder_study(folder: str, images: list[str], num_views: int) -> StudyJob:
  if len(images) != num_views:
    listed = ", ".join(os.path.basename(p) for p in images)
    return _error(folder, f"a study folder must hold exactly {num_views} images (this model "
                  f"reads {num_views} views a study), it holds {len(images)}: {listed}",
                  f"keep the study's {num_views} views in the folder (sorted by name: frontal "
                  f"first), or name them with '{VIEW_JOIN}'")
  return StudyJob(folder, tuple(images))


def _folder_studies(folder: str, num_views: int) -> list[StudyJob]:
  own = _own_images(folder)
  if own:
    return [_folder_study(folder, own, num_views)]
  jobs = []
  for root, dirs, _ in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    if root != folder:
      images = _own_images(root)
      if images:
        jobs.append(_folder_study(root, images, num_views))
  return jobs or [_error(folder, "no folder in it holds image files (suffixes "
                         f"{', '.join(image_files.IMAGE_SUFFIXES)})",
                         "point at a study folder, or at a folder of study folders")]


def _joined_study(entry: str, num_views: int) -> StudyJob:
  parts = entry.split(VIEW_JOIN)
  if len(parts) != num_views:
    return _error(entry, f"names {len(parts)} views, but this model reads {num_views} a study",
                  f"join exactly {num_views} files with '{VIEW_JOIN}', frontal first")
  for part in parts:
    if not os.path.isfile(part):
      what = "is a folder" if os.path.isdir(part) else "no such file"
      return _error(entry, f"view {part!r}: {what}", "name existing image files")
  return StudyJob(entry, tuple(parts))


def expand_studies(paths: Sequence[str], num_views: int) -> list[StudyJob]:
  """One StudyJob per study, in the order given (see the module docstring)."""
  if num_views == 1:
    return [StudyJob(j.path, (j.path,) if j.error is None else (), j.error)
            for j in image_files.expand_paths(paths)]
  jobs: list[StudyJob] = []
  for entry in (str(p) for p in paths):
    if os.path.isdir(entry):
      jobs += _folder_studies(entry, num_views)
    elif VIEW_JOIN in entry and not os.path.exists(entry):
      jobs.append(_joined_study(entry, num_views))
    elif os.path.exists(entry):
      jobs.append(_error(entry, f"one file, but this model reads {num_views} views a study",
                         f"pass the study's folder, or join its {num_views} files with "
                         f"'{VIEW_JOIN}' (FRONTAL.png{VIEW_JOIN}LATERAL.png)"))
    else:
      jobs.append(_error(entry, "no such file or folder", "check the path"))
  return jobs


def read_studies(jobs: Sequence[StudyJob]
                 ) -> Iterator[tuple[StudyJob, Optional[list[np.ndarray]], Optional[str]]]:
  """(job, [one 2-D uint8 image per view], None) or (job, None, error) per job, in order; a view
  that cannot be read fails its study, with that file named."""
  for job in jobs:
    if job.error is not None:
      yield job, None, job.error
      continue
    images, error = [], None
    for _, image, err in image_files.read_images([image_files.ImageJob(p) for p in job.paths]):
      if err is not None:
        error = err if len(job.paths) == 1 else f"study {job.name!r}: {err}"
        break
      images.append(image)
    yield job, (None if error else images), error
