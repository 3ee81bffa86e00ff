"""What a synthetic radiograph can show: the finding kinds, their sides and zones, and prevalence.

A `Finding` is the single source of truth shared by the image renderer (which draws it) and the
report writer (which states it), so that every statement of a synthetic report is true of its image.

Sides are the patient's: "right" is the patient's right, which a PA radiograph shows on the
viewer's LEFT (small x). The renderer follows that convention.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")


@dataclasses.dataclass(frozen=True)
class FindingSpec:
  kind: str
  sided: bool  # drawn on one side, named in the report
  zoned: bool  # drawn in one lung zone, named in the report
  prevalence: float  # probability that a synthetic study has it
  lesion: str  # the Table 1 lesion keyword it is named by


# Prevalence follows the shape of Table 1 (lesion count / 32,410 training reports), with a floor of
# about 1% so that the rarest findings still occur in a demo-sized set, and a cap so that the
# commonest leave room for normal studies.
FINDING_SPECS: tuple[FindingSpec, ...] = (
    FindingSpec("enhanced_texture", sided=False, zoned=False, prevalence=0.30, lesion="enhanced"),
    FindingSpec("patchy_shadow", sided=True, zoned=True, prevalence=0.35, lesion="shadow"),
    FindingSpec("calcification", sided=False, zoned=False, prevalence=0.05, lesion="calcification"),
    FindingSpec("sternal_wires", sided=False, zoned=False, prevalence=0.08, lesion="postoperative"),
    FindingSpec("pacemaker", sided=True, zoned=False, prevalence=0.06, lesion="insert"),
    FindingSpec("effusion", sided=True, zoned=False, prevalence=0.05, lesion="effusion"),
    FindingSpec("pneumothorax", sided=True, zoned=False, prevalence=0.03, lesion="no_lung_texture"),
    FindingSpec("emphysema", sided=False, zoned=False, prevalence=0.02, lesion="emphysema"),
    FindingSpec("rib_fracture", sided=True, zoned=True, prevalence=0.012, lesion="fracture"),
    FindingSpec("intubation", sided=False, zoned=False, prevalence=0.012, lesion="intubation"),
    FindingSpec("drainage_tube", sided=True, zoned=False, prevalence=0.012, lesion="drainage"),
    FindingSpec("scoliosis", sided=True, zoned=False, prevalence=0.02, lesion="side_bend"),
    FindingSpec("aortic_knot_prominence", sided=False, zoned=False, prevalence=0.05,
                lesion="prominence"),
    FindingSpec("tortuous_aorta", sided=False, zoned=False, prevalence=0.04, lesion="torque"),
    FindingSpec("mediastinal_shift", sided=True, zoned=False, prevalence=0.02, lesion="shift"),
    FindingSpec("atelectasis", sided=True, zoned=True, prevalence=0.01, lesion="atelectasis"),
)
FINDING_KINDS: tuple[str, ...] = tuple(s.kind for s in FINDING_SPECS)
SPEC_BY_KIND: dict[str, FindingSpec] = {s.kind: s for s in FINDING_SPECS}


@dataclasses.dataclass(frozen=True)
class Finding:
  """One abnormality of one study.

  kind: one of FINDING_KINDS.
  side: "right" | "left" for sided kinds, else None. For scoliosis it is the side the convexity
    bends toward; for mediastinal_shift the side the mediastinum moves toward; for a pacemaker the
    side of the chest wall the generator sits on.
  zone: "upper" | "middle" | "lower" for zoned kinds, else None.
  rib: for rib_fracture, the posterior rib number (3..9) that is broken; else None.
  """

  kind: str
  side: Optional[str] = None
  zone: Optional[str] = None
  rib: Optional[int] = None

  def __post_init__(self):
    spec = SPEC_BY_KIND.get(self.kind)
    if spec is None:
      raise ValueError(f"unknown finding kind {self.kind!r}; known: {', '.join(FINDING_KINDS)}")
    if spec.sided != (self.side is not None) or (self.side and self.side not in SIDES):
      raise ValueError(f"finding {self.kind!r} has side {self.side!r}")
    if spec.zoned != (self.zone is not None) or (self.zone and self.zone not in ZONES):
      raise ValueError(f"finding {self.kind!r} has zone {self.zone!r}")
    if (self.kind == "rib_fracture") != (self.rib is not None):
      raise ValueError(f"finding {self.kind!r} has rib {self.rib!r}")


def _zone_for_rib(rib: int) -> str:
  return "upper" if rib <= 4 else ("middle" if rib <= 6 else "lower")


def sample_findings(rng: np.random.Generator) -> tuple[Finding, ...]:
  """Draws the findings of one study, independently by prevalence, then resolves conflicts.

  Rules that keep a study physically coherent:
  - one patchy shadow at most (a second would be a different report style);
  - pneumothorax and effusion never on the same side; atelectasis never in a pneumothorax lung;
  - a mediastinal shift goes toward atelectasis, or away from a pneumothorax, when either exists;
  - a drainage tube sits on the side of an effusion or pneumothorax when one exists.
  """
  drawn = {s.kind for s in FINDING_SPECS if rng.random() < s.prevalence}
  side = lambda: SIDES[int(rng.integers(2))]  # noqa: E731
  zone = lambda: ZONES[int(rng.integers(3))]  # noqa: E731
  findings: dict[str, Finding] = {}
  if "pneumothorax" in drawn:
    findings["pneumothorax"] = Finding("pneumothorax", side=side())
  if "effusion" in drawn:
    s = side()
    if "pneumothorax" in findings and findings["pneumothorax"].side == s:
      s = "left" if s == "right" else "right"
    findings["effusion"] = Finding("effusion", side=s)
  if "atelectasis" in drawn:
    s = side()
    if "pneumothorax" in findings and findings["pneumothorax"].side == s:
      s = "left" if s == "right" else "right"
    findings["atelectasis"] = Finding("atelectasis", side=s, zone=zone())
  if "mediastinal_shift" in drawn:
    if "atelectasis" in findings:
      s = findings["atelectasis"].side
    elif "pneumothorax" in findings:
      s = "left" if findings["pneumothorax"].side == "right" else "right"
    else:
      s = side()
    findings["mediastinal_shift"] = Finding("mediastinal_shift", side=s)
  if "drainage_tube" in drawn:
    fluid = findings.get("effusion") or findings.get("pneumothorax")
    findings["drainage_tube"] = Finding("drainage_tube", side=fluid.side if fluid else side())
  if "rib_fracture" in drawn:
    rib = int(rng.integers(3, 10))
    findings["rib_fracture"] = Finding("rib_fracture", side=side(), zone=_zone_for_rib(rib), rib=rib)
  if "patchy_shadow" in drawn:
    findings["patchy_shadow"] = Finding("patchy_shadow", side=side(), zone=zone())
  for kind in ("pacemaker", "scoliosis"):
    if kind in drawn:
      findings[kind] = Finding(kind, side=side())
  for kind in drawn - set(findings):
    findings[kind] = Finding(kind)
  return tuple(findings[k] for k in FINDING_KINDS if k in findings)
