"""What every output of a trained run says about the run: its provenance, each image's OOD
score and flag, and a warning when the model was trained on synthetic images or the image is
unlike its training images.

    facts = RunFacts.of(config, workdir, run)        # once, after inference.trained.load
    facts.line_fields(features)                        # per image: the fields of its output line

After training (`record_run`), DIR/provenance.json and DIR/ood/ are written for the checkpoint
that evaluation and prediction use.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Optional, Sequence

import numpy as np

from cnx2rg_jax.data import dataset
from cnx2rg_jax.inference import ood, provenance

R2GEN_RECORD = "r2gen_conversion.json"  # convert.r2gen's record: the run is a converted one


def how_to_make(workdir: str) -> str:
  """The sentence that says how to give the run in `workdir` an OOD reference."""
  if (pathlib.Path(workdir) / R2GEN_RECORD).is_file():
    return ("a converted R2Gen checkpoint carries no training features: compute them from its "
            "training data with python launch.py --config=configs/r2gen.py:DATASET "
            f"--workdir={workdir} --mode=ood_reference --config.data.manual_dir=FOLDER "
            "(annotation.json and the images), or convert with --ood_data=FOLDER")
  return (f"compute it with python launch.py --config=... --workdir={workdir} "
          "--mode=ood_reference (it reads the run's train and val splits)")


@dataclasses.dataclass
class RunFacts:
  fields: dict  # {"trained_on": {...}, "checkpoint_step": N}
  reference: Optional[ood.Reference]
  unavailable: Optional[str]  # why there is no OOD score (None when there is one)

  @classmethod
  def of(cls, config, workdir: str, run) -> "RunFacts":
    """The facts of `run` (inference.trained.TrainedRun) loaded from `workdir`."""
    fields = provenance.for_run(config, workdir, run.step)
    dim = getattr(run.model.config, "d_vf", None)
    reference, why = ood.load(workdir, run.step, dim, how_to_make(workdir))
    return cls(fields, reference, why)

  @property
  def synthetic(self) -> bool:
    return provenance.is_synthetic(self.fields)

  def notices(self) -> list[str]:
    """The lines to print once on stderr before the outputs."""
    out = []
    if self.synthetic:
      out.append(f"warning: {provenance.SYNTHETIC_WARNING}")
    if self.reference is None:
      out.append(f"notice: ood_score is null on every line: {self.unavailable}")
    return out

  def scores(self, features: np.ndarray) -> Optional[np.ndarray]:
    return None if self.reference is None else self.reference.scores(features)

  def line_fields(self, features: np.ndarray, blank: Sequence[bool] = ()) -> list[dict]:
    """Per row of pooled features [N, D]: ood_score, out_of_distribution, trained_on,
    checkpoint_step and, when there is something to warn of, warning. `blank[i]` (as
    `ood.is_blank` says of the image read) flags row i too, with "blank_image": true."""
    scores = self.scores(features)
    out = []
    for i in range(len(features)):
      score = None if scores is None else float(scores[i])
      line = ood.flag_fields(self.reference, score, self.unavailable)
      warnings = [provenance.SYNTHETIC_WARNING] if self.synthetic else []
      if line["out_of_distribution"]:
        warnings.append(ood.ood_warning(score, self.reference))
      if i < len(blank) and blank[i]:
        line["out_of_distribution"], line["blank_image"] = True, True
        warnings.append(ood.BLANK_WARNING)
      line.update(self.fields)
      if warnings:
        line["warning"] = " ".join(warnings)
      out.append(line)
    return out


def record_run(config, workdir: str, run, prepared: Optional[dataset.PreparedDataset] = None,
               log: Callable[[str], None] = print, keep_provenance: bool = False,
               with_ood: Optional[bool] = None) -> Optional[ood.Reference]:
  """DIR/provenance.json and DIR/ood/ (when `with_ood`, by default ood.enabled) for `run`, the
  checkpoint evaluation and prediction use; returns the OOD reference written (or None).
  `keep_provenance` leaves an existing provenance.json alone (a converted checkpoint's says
  more than the data read here)."""
  if prepared is None:
    prepared = dataset.prepare(config.data, dataset.num_views(config))
  if not (keep_provenance and provenance.read(workdir)):
    provenance.write(workdir, provenance.trained_on(config, prepared), run.step, run.chosen_by)
  if not (config.ood.enabled if with_ood is None else with_ood):
    return None
  reference, val_scores = ood.compute(config, run, prepared, log)
  folder = ood.save(workdir, reference, val_scores)
  log(f"wrote the OOD reference {folder}")
  return reference
