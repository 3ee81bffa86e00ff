"""The finding painters: each draws one finding into the radiograph being built.

`PAINTERS[kind](c, finding, params)` works in the canonical frame on the render context c
(render._Ctx), with params = finding_params.finding_params(patient, finding). A painter may add
density to c.fx (clipped to c.box later), scale the lung air c.air (c.air0: the lung fields before
any finding) or the marking gain c.texgain, draw metal and calcium on the canvas c.dense, or set
c.air_gain, c.tex_amp and c.extra_tex. Painters run in FINDING_KINDS order, after the normal soft
tissue and air and before the markings and bones. Kinds without a painter (mediastinal shift,
scoliosis, aortic knot prominence, tortuous aorta) change the normal anatomy instead
(finding_params.mods_for, render._normal). finding_regions.finding_region bounds what each changes.
"""

from __future__ import annotations

import math

import numpy as np

from tfds_cncxr.synthetic import anatomy as an
from tfds_cncxr.synthetic.drawing import K_RIB, Canvas, angular, blur, f32, rect, rib_band, window
from tfds_cncxr.synthetic.finding_params import finding_rng


def _effusion(c, f, p):
  s, d = an.SIDE_SIGN[f.side], an.dome_top(c.patient, f.side, c.mods)
  ys, xs = win = window(c.fr, rect(f.side, 0.0, 0.8, d - p["h"] - p["m"] - 0.06, d + 0.3), c.box)
  a = c.g["u"][:, xs] * f32(s)
  t = np.clip((a - f32(0.1)) * f32(1 / 0.56), 0, 1)  # the meniscus rises laterally
  fl = np.clip((c.g["v"][ys] - f32(d - p["h"]) + f32(p["m"]) * t * t) * f32(1 / 0.035), 0, 1)
  fl *= np.clip((a - f32(0.03)) * f32(50), 0, 1)
  c.air[win] *= 1 - fl
  c.fx[win] += fl * c.air0[win] * f32(0.05)


def _patchy_shadow(c, f, p):
  cu, cv = p["cu"], p["cv"]
  ys, xs = win = window(c.fr, rect(None, cu - 0.2, cu + 0.2, cv - 0.2, cv + 0.2), c.box)
  uw, vw = c.g["u"][:, xs], c.g["v"][ys]
  acc = np.zeros((vw.shape[0], uw.shape[1]), f32)
  for du, dv, sg, am in p["blobs"]:  # separable Gaussians (the canonical frame is axis-aligned)
    k = f32(-0.5 / sg**2)
    acc += (np.exp((vw - f32(cv + dv)) ** 2 * k) * f32(am)) * np.exp((uw - f32(cu + du)) ** 2 * k)
  c.fx[win] += (1 - np.exp(-acc)) * c.air0[win] * f32(0.3)


def _atelectasis(c, f, p):
  cv, hz, am, al, cnv = p["cv"], p["hz"], p["a_med"], p["a_lat"], Canvas(c.fr)
  if p["wedge"]:  # apex toward the hilum, base on the pleura
    cnv.poly(an.mirror(((am, cv + p["tilt"]), (al + 0.03, cv - 0.38 * hz),
                        (al + 0.03, cv + 0.38 * hz)), f.side))
  else:  # a plate
    cnv.line(an.mirror(((am + 0.04, cv - 0.02), (al + 0.02, cv + p["tilt"] + 0.02)), f.side), 0.075)
  win = window(c.fr, an.lung_points(c.patient, f.side, c.mods), c.box)
  w = cnv.array()[win] * f32(1 / 255)
  w = blur(w, np.empty_like(w), np.empty_like(w)) * f32(1 / 16) * c.air0[win]
  c.air[win] *= 1 - f32(0.85) * w
  c.fx[win] += w * f32(0.06)


def _pneumothorax(c, f, p):
  pts, vb = an.lung_points(c.patient, f.side, c.mods), an.dome_top(c.patient, f.side, c.mods) + 0.12
  a = an.LUNG_MEDIAL_A + (np.abs(pts[:, 0]) - an.LUNG_MEDIAL_A) * p["ka"]  # the collapsed lung
  col = np.stack([an.SIDE_SIGN[f.side] * a, vb - (vb - pts[:, 1]) * p["kv"]], 1)
  win = window(c.fr, pts, c.box)
  inner = Canvas(c.fr).poly(col).array()[win] * (c.air0[win] * f32(1 / 255))
  pleural = c.air0[win] - inner
  line = Canvas(c.fr).line(col[(a > 0.16) & (col[:, 1] < vb - 0.25)], 0.014)  # visceral pleura
  c.fx[win] += inner * f32(0.025) - pleural * f32(0.09) + line.array()[win] * f32(0.1 / 255)
  c.texgain[win] *= 1 - pleural


def _emphysema(c, f, p):
  c.air_gain, c.tex_amp = 1.28, 0.45


def _enhanced_texture(c, f, p):
  rng, r = finding_rng(c.patient, f, 1), c.g["r"]
  prof = angular(rng, int(rng.integers(24, 32)), -1.7, 1.7, 0.08, ((0.04, 0.1),), 1)[0]
  fade = np.clip((1.05 - r) / 0.3, 0, 1) * np.clip((r - 0.2) / 0.15, 0, 1)
  ring = 0.5 + 0.5 * np.sin(r * (c.fr.size * 0.62 / 7.0) + rng.uniform(0, 6.3))  # reticulation
  c.extra_tex = (prof * f32(0.8), fade.astype(f32), (ring * fade * 0.5).astype(f32))
  c.tex_amp *= 1.6


def _rib_fracture(c, f, p):
  lv, af = float(an.rib_level(c.patient, f.side, f.rib)), p["af"]
  vf = lv + an.rib_shape(af)
  ys, xs = win = window(c.fr, rect(f.side, af - 0.1, af + 0.14, vf - 0.07, vf + 0.11), c.box)
  a = c.g["u"][:, xs] * f32(an.SIDE_SIGN[f.side])
  w = c.g["v"][ys] - an.rib_shape(a) - f32(lv)
  disp = p["step"] * np.clip(1 - (a - af) / 0.13, 0, 1) * (a > af)  # the displaced fragment
  gap = np.clip((np.abs(a - af) - p["gap"] / 2) * 300, 0, 1)
  c.fx[win] += (K_RIB * (rib_band(w - disp) * gap - rib_band(w))).astype(f32)


def _calcification(c, f, p):
  cu, cv, ru, rv = an.aortic_knot(c.patient, c.mods)
  arc = an.ellipse(cu, cv, ru * 0.82, rv * 0.82, 12, p["a0"], p["a1"])
  if p["nodular"]:
    for q in arc[[1, 5, 9]]:
      c.dense.oval(q[0], q[1], 0.017, 0.017, 0.5)
  else:
    c.dense.line(arc, 0.022, 0.5)


def _sternal_wires(c, f, p):
  for v, eight, du in zip(p["v"], p["eight"], p["du"]):
    if eight:
      c.dense.oval(du, v - 0.013, 0.022, 0.013, 0.9, 0.016).oval(du, v + 0.013, 0.022, 0.013, 0.9,
                                                                  0.016)
    else:  # a loop and its twisted end
      c.dense.oval(du, v, 0.03, 0.02, 0.9, 0.016).line(((du - 0.01, v - 0.02),
                                                        (du + 0.012, v - 0.035)), 0.016, 0.9)


def _pacemaker(c, f, p):
  cu, cv, ru, rv = p["gen"]
  t = np.linspace(0, 2 * math.pi, 24)
  sx, sy = (np.sign(z) * np.abs(z) ** 0.35 for z in (np.cos(t), np.sin(t)))
  lead = an.shifted(an.catmull_rom(p["lead"], 4), c.mods, -0.55)
  c.dense.line(lead, 0.018, 0.75).poly(np.stack([cu + ru * sx, cv + rv * sy], 1))  # rounded box
  c.dense.poly(np.stack([cu - 0.3 * ru + 0.5 * ru * sx, cv + 0.6 * rv * sy], 1), 0.8)  # battery
  c.dense.oval(lead[-1, 0], lead[-1, 1], 0.014, 0.014)


def _tube(c, pts, width):  # a plastic tube with its radio-opaque stripe
  c.dense.line(pts, width, 0.22).line(pts + [0.012, 0.0], 0.014, 0.6)


PAINTERS = {
    "effusion": _effusion, "patchy_shadow": _patchy_shadow, "atelectasis": _atelectasis,
    "pneumothorax": _pneumothorax, "emphysema": _emphysema, "enhanced_texture": _enhanced_texture,
    "rib_fracture": _rib_fracture, "calcification": _calcification, "sternal_wires": _sternal_wires,
    "pacemaker": _pacemaker,
    "intubation": lambda c, f, p: _tube(c, an.trachea_line(None, -0.95, p["tip"], c.mods), 0.042),
    "drainage_tube": lambda c, f, p: _tube(c, an.catmull_rom(p["path"], 8), 0.05)}
