"""How each finding looks in one patient: its own generator, its parameters, and what it changes.

`finding_params` draws a finding's shape parameters from `finding_rng`, a generator seeded by
(noise_seed, kind) alone, so a finding looks the same whatever else the study shows. `mods_for`
turns the parameters of a study's findings into the `anatomy.Mods` they make to the normal
geometry; `tortuous_path` is the course of a tortuous descending aorta.
"""

from __future__ import annotations

import math

import numpy as np

from tfds_cncxr.synthetic.anatomy import (NO_MODS, RIB_AF, SIDE_SIGN, Mods, Patient, aortic_knot,
                                          lung_span, mirror, shifted, zone_bounds)
from tfds_cncxr.synthetic.findings import FINDING_KINDS, Finding


def finding_rng(patient: Patient, finding: Finding, stream: int = 0) -> np.random.Generator:
  """The finding's own generator: seeded by (noise_seed, kind), whatever else the study shows."""
  kind = FINDING_KINDS.index(finding.kind)
  return np.random.default_rng([patient.noise_seed, 7919, kind, stream])


def finding_params(patient: Patient, f: Finding) -> dict:
  """How one finding looks in one patient; the same whenever it is asked (its own generator)."""
  rng = finding_rng(patient, f)
  u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
  s = SIDE_SIGN.get(f.side, 1.0)
  k = f.kind
  if k == "mediastinal_shift":
    return {"shift": s * u(0.085, 0.13)}
  if k == "scoliosis":
    return {"bend": s * u(0.06, 0.09)}
  if k == "aortic_knot_prominence":
    return {"knot_scale": u(1.45, 1.7)}
  if k == "effusion":
    return {"h": u(0.0, 0.12), "m": u(0.14, 0.22)}
  if k == "pneumothorax":
    return {"ka": u(0.72, 0.8), "kv": u(0.84, 0.9)}
  if k == "rib_fracture":
    step = u(0.035, 0.045) * (1 if rng.random() < 0.5 else -1)
    return {"af": RIB_AF + u(-0.04, 0.04), "step": step, "gap": u(0.05, 0.06)}
  if k == "intubation":
    return {"tip": -0.3 - u(0.1, 0.16)}
  if k == "calcification":
    return {"nodular": bool(rng.random() < 0.35), "a0": u(-2.6, -2.2), "a1": u(-0.6, 0.0)}
  if k == "tortuous_aorta":
    return {"amp": u(0.055, 0.075), "lam": u(0.4, 0.5), "phase": u(0.0, 1.0)}
  if k == "sternal_wires":
    n = int(rng.integers(4, 7))
    return {"v": np.linspace(-0.42, 0.1, n) + rng.uniform(-0.01, 0.01, n),
            "eight": rng.random(n) < 0.4, "du": rng.uniform(-0.008, 0.008, n)}
  if k in ("patchy_shadow", "atelectasis"):
    v0, v1 = zone_bounds(patient, f.side)[f.zone]
    cv = v0 + (v1 - v0) * u(0.4, 0.6)
    a_med, a_lat = lung_span(patient, f.side, cv)
    p = {"cv": cv, "a_med": a_med, "a_lat": a_lat, "hz": v1 - v0}
    if k == "atelectasis":
      return dict(p, wedge=bool(rng.random() < 0.5), raise_=u(0.025, 0.045), tilt=u(-0.04, 0.04))
    n = int(rng.integers(7, 12))
    return dict(p, cu=s * (a_med + (a_lat - a_med) * u(0.4, 0.6)),
                blobs=np.stack([rng.normal(0, 0.045, n), rng.normal(0, 0.038, n),
                                rng.uniform(0.022, 0.045, n), rng.uniform(0.5, 1.1, n)], 1))
  if k == "pacemaker":
    ag, vg = u(0.44, 0.52), u(-0.56, -0.5)
    lead = ((ag - 0.06, vg - 0.02), (0.3, vg - 0.085), (0.14, -0.625))
    lead = [(s * a, v) for a, v in lead] + [(-0.075, -0.5), (-0.085, -0.26), (-0.05, -0.02),
                                            (0.07, 0.2), (u(0.17, 0.22), u(0.3, 0.36))]
    return {"gen": (s * ag, vg, u(0.075, 0.09), u(0.055, 0.07)), "lead": np.array(lead)}
  if k == "drainage_tube":
    ve, vt = u(0.26, 0.36), u(-0.45, -0.3)
    pts = ((0.745, ve), (0.67, ve - 0.05), (0.625, ve - 0.2), (0.6, (ve + vt) / 2),
           (0.555, vt + 0.1), (0.49, vt))
    return {"path": mirror(pts, f.side)}
  return {}


def mods_for(params: dict) -> Mods:
  """The geometric changes of {kind: (finding, params)}."""
  kw = {}
  for kind, (f, p) in params.items():
    if kind in ("mediastinal_shift", "scoliosis", "aortic_knot_prominence"):
      kw.update(p)  # shift, bend, knot_scale
    elif kind == "emphysema":
      kw["emphysema"] = True
    elif kind == "atelectasis":
      kw["raise_" + f.side] = p["raise_"]
  return Mods(**kw)


def tortuous_path(patient: Patient, p: dict, mods: Mods = NO_MODS) -> np.ndarray:
  cu, cv, _, _ = aortic_knot(patient)
  v = np.linspace(cv - 0.03, 0.4, 24)
  t = (v - cv) / (0.4 - cv)
  u_ = 0.105 + p["amp"] * np.sin(2 * math.pi * ((v - cv) / p["lam"] + p["phase"])) * np.sin(
      math.pi * np.clip(t * 1.3, 0, 1)) + 0.1 * t
  return shifted(np.stack([u_, v], 1), mods)
