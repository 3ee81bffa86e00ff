"""Procedural PA chest radiographs: normal anatomy plus the findings of findings.py, drawn in place.

A density map (bright = dense) of soft tissue, lung air, mediastinum, bones, airway and findings is
drawn in the nominal (canonical) frame on grids cached per size, carried to the patient's scale,
rotation and offset by one nearest-pixel warp, softened, tone-mapped with the patient's exposure,
contrast and gamma, plus Gaussian noise. Randomness comes only from the patient's noise_seed: the
noise and the normal lung markings first (the same stream whatever the findings), then one
generator per finding seeded by (noise_seed, kind), so a finding changes pixels only where it is
drawn (`finding_region`). Full-size work reuses per-thread scratch arrays: on small machines the
page faults of fresh 256 KB arrays cost more than the arithmetic on them.

The findings themselves are drawn by finding_painters.py, and `finding_region` (re-exported here)
lives in finding_regions.py; the shared drawing primitives are in drawing.py.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import numpy as np
from scipy import special

from tfds_cncxr.synthetic import anatomy as an
from tfds_cncxr.synthetic.drawing import (K_AIR, K_ANT_RIB, K_BODY, K_CLAVICLE, K_RIB, K_SPINE,
                                          K_TRACHEA, NB, PAD, Canvas, angular, blur, box_clip, f32,
                                          rect, rib_band, window)
from tfds_cncxr.synthetic.finding_painters import PAINTERS
from tfds_cncxr.synthetic.finding_params import finding_params, mods_for, tortuous_path
from tfds_cncxr.synthetic.finding_regions import finding_region
from tfds_cncxr.synthetic.findings import FINDING_KINDS, SIDES, Finding

__all__ = ["finding_region", "render_radiograph"]

_RB = 500  # rib bins per v
_TLS = threading.local()


# ---------------------------------------------------------------- tables and canonical grids


@functools.lru_cache(maxsize=64)
def _tables(gamma: float):
  """The tone curve (1024 density levels -> uint8) and 256 standard-normal quantiles (noise)."""
  return ((255.0 * (np.arange(1024) / 1023.0) ** (0.9 * gamma) + 0.5).astype(np.uint8),
          special.ndtri((np.arange(256) + 0.5) / 256).astype(f32))


def _spine(v, du):
  """The vertebral column about its centre line (du = u - centre): bodies with darker disc
  spaces, and pedicle rings."""
  ph = (v + f32(2.0)) * f32(1 / 0.085)
  ph = ph - np.floor(ph)
  adu = np.abs(du)
  body = np.clip((f32(0.058) - adu) * f32(250) + f32(0.5), 0, 1)
  disc = np.clip((np.abs(ph - f32(0.5)) - f32(0.39)) * f32(18), 0, 1) * f32(0.6)
  q = ((adu - f32(0.036)) * f32(1 / 0.011)) ** 2 + ((ph - f32(0.38)) * f32(1 / 0.17)) ** 2
  return body * (f32(K_SPINE) * (1 - f32(0.5) * disc) + f32(0.05) * np.clip(
      1 - np.abs(q - 1) * f32(1.3), 0, 1))


@functools.lru_cache(maxsize=4)
def _grids(size: int) -> dict:
  """Everything of the canonical frame that is the same for every patient (read-only)."""
  fr = an.Frame(None, size)
  r = ((np.arange(size) - fr.c) / fr.half).astype(f32)
  u, v = r[None, :], r[:, None]
  hw = np.interp(v, (-1.2, -0.98, -0.93, -0.86, -0.78, -0.7, -0.5, 0.0, 0.6, 1.2),
                 (0.2, 0.22, 0.36, 0.62, 0.84, 0.95, 0.93, 0.9, 0.88, 0.85))
  dep = np.interp(v, (-1.2, -0.9, -0.7, -0.4, 0.5), (0.62, 0.68, 0.9, 1.0, 1.04))
  t = np.sqrt(np.clip(3.0 - 3.0 * (u / hw) ** 2, 0, 1)) * dep  # body depth
  q = np.minimum(((np.abs(u) - 0.43) / 0.3) ** 2 + ((v - 0.38) / 0.24) ** 2, 1.0)
  rr = np.arange(2 * size) / (size / 2.0 * 0.62)  # pixel radius in lung units
  fade = np.clip((1.0 - rr) / 0.25, 0.0, 1.0)
  g = {"u": u, "v": v, "body": t * K_BODY, "air_w": K_AIR * (0.6 + 0.4 * t), "r": rr,
       "apex": np.interp(v, (-0.7, -0.4), (0.7, 1.0)), "breast": np.clip(4 - 4 * q, 0, 1) * 0.06,
       "rows": slice(int(fr.c - 1.0 * fr.half), int(fr.c + 0.8 * fr.half)),
       "rw": np.stack([np.exp(-((rr - 0.23) / 0.12) ** 2), np.exp(-((rr - 0.45) / 0.2) ** 2) * fade,
                       np.exp(-((rr - 0.72) / 0.22) ** 2) * fade * 0.8]),  # trunks .. twigs
       "spine_cols": slice(int(fr.c - 0.15 * fr.half), int(fr.c + 0.15 * fr.half) + 2)}
  g["spine"] = _spine(v, u[:, g["spine_cols"]])
  for side, cols in (("right", slice(0, size // 2)), ("left", slice(size // 2, size))):
    a, vv = np.abs(u[:, cols]), v[g["rows"]] * _RB + 2.0 * _RB
    shape = np.where(a < 0.77, an.rib_shape(a) * _RB, -1500.0)  # beyond the cage: off the table
    g["wp" + side] = np.clip(vv - shape, 0, 2599).astype(np.intp)  # posterior rib table index
    g["wa" + side] = np.clip(vv + a * (0.62 * _RB), 0, 2599).astype(np.intp)  # anterior
    g["ext" + side] = np.clip((a - 0.24) * 6.25, 0, 1) * np.clip((0.74 - a) * 30, 0, 1)
    g["cols" + side] = cols
    x0, y0 = fr.to_px(*an.hilum(side))  # polar grids about the vessels' origin, 0 = lateral
    dx, dy = np.arange(size) - round(float(x0)), np.arange(size)[:, None] - round(float(y0))
    ang = np.arctan2(dy, an.SIDE_SIGN[side] * dx)
    g["ang" + side] = (ang + math.pi) * (NB / 2 / math.pi) + PAD
    g["rad" + side] = np.rint(np.hypot(dx, dy)).astype(np.intp)
    g["rw" + side] = g["rw"][:, g["rad" + side]]
  cl, tr = Canvas(fr), Canvas(fr)
  for side in SIDES:
    cl.line(an.clavicle_points(side), 0.062)
  for pts, width in an.trachea_paths(None):
    tr.line(pts, width)
  g["clavicles"] = cl.array() * (K_CLAVICLE / 255)
  g["thin"] = g["clavicles"] - tr.array() * (K_TRACHEA / 255)  # clavicles less the airway
  for k, x in g.items():
    if isinstance(x, np.ndarray):
      g[k] = x.astype(f32) if x.dtype == np.float64 else x
      g[k].flags.writeable = False
  return g


def _scratch(size: int) -> dict:
  """This thread's full-size scratch arrays (reused: their pages are already mapped)."""
  ws = getattr(_TLS, "ws", None)
  if ws is None or ws["size"] != size:
    ws = _TLS.ws = {k: np.zeros((size, size), np.intp if k[0] == "i" else f32)
                    for k in ("A", "air0", "air", "fx", "tex", "t1", "t2", "t3", "i1", "i2")}
    ws["size"] = size
  return ws


_X = np.arange(-40, 41) / _RB
_RIB_KERNELS = rib_band(_X) * K_RIB, np.clip((0.03 - np.abs(_X)) / 0.006 + 0.5, 0, 1) * K_ANT_RIB


def _rib_tables(patient: an.Patient, side: str):
  """Posterior and anterior rib densities over v - shape(a) and v + 0.62 a, 1/_RB bins from -2."""
  (kp, ka), post, ant = _RIB_KERNELS, np.zeros(2600, f32), np.zeros(2600, f32)
  lv = np.rint((an.rib_level(patient, side, np.arange(1, 12)) + 2.0) * _RB).astype(int)
  for k, i in enumerate(lv):
    post[i - 40:i + 41] += kp
    if k < 7:
      j = i + int(round((0.11 + 0.62 * 0.7) * _RB))
      ant[j - 40:j + 41] += ka
  return post, ant


def _vessels(rng, size: int) -> dict:
  """Both lungs' normal markings: angular profiles (trunks with the hilar shadow, branches, twigs)
  and a wobble by radius, scaled by a curl that varies slowly enough with angle not to fold."""
  prof = angular(rng, 11, -1.5, 1.45, 0.055, ((0.03, 0.08), (0.02, 0.05)))
  th = (np.arange(NB + 2 * PAD) - PAD + 0.5) * (2 * math.pi / NB) - math.pi
  prof[:, 0] += (0.15 * np.exp(-(th / 0.9) ** 2)).astype(f32)  # the hilar shadow
  r, ph = _grids(size)["r"], rng.uniform(0, 2 * math.pi, (2, 2, 1))
  wob = (7.0 * np.sin(r * 7.0 + ph[:, 0]) + 4.0 * np.sin(r * 17.0 + ph[:, 1])).astype(f32)
  x, knots = np.arange(NB + 2 * PAD), rng.uniform(-1.0, 1.0, (2, 10))
  return {s: (prof[i], wob[i], np.interp(x, np.linspace(0, x[-1], 10), knots[i]).astype(f32))
          for i, s in enumerate(SIDES)}


# ---------------------------------------------------------------- the radiograph


class _Ctx:
  """What the painters (finding_painters.py) share while one image is built (canonical frame)."""

  def __init__(self, patient, size, params, box):
    self.patient, self.fr, self.params, self.box = patient, an.Frame(None, size), params, box
    self.mods, self.g, self.ws = mods_for(params), _grids(size), _scratch(size)
    self.fx, self.texgain = self.ws["fx"], self.ws["tex"]  # finding densities; marking gain
    self.fx.fill(0)
    self.texgain.fill(1)
    self._dense, self.extra_tex, self.air_gain, self.tex_amp = None, None, 1.0, 1.0

  @property
  def dense(self):  # metal and calcium
    if self._dense is None:
      self._dense = Canvas(self.fr)
    return self._dense


def _normal(c: _Ctx):
  """Soft tissue, lung fields less the mediastinum, clavicles, airway and stomach bubble."""
  p, fr, g, ws = c.patient, c.fr, c.g, c.ws
  c.A = np.multiply(g["body"], f32(p.soft_tissue ** 0.5), out=ws["A"])
  if p.breast:
    c.A += np.multiply(g["breast"], f32(p.breast), out=ws["t1"])
  air = Canvas(fr).poly(an.lung_points(p, "right", c.mods)).poly(an.lung_points(p, "left", c.mods))
  air.poly(an.mediastinum_points(p, c.mods), 0).oval(*an.aortic_knot(p, c.mods), 0)
  if "tortuous_aorta" in c.params:
    path = tortuous_path(p, c.params["tortuous_aorta"][1], c.mods)
    air.line(path, 0.085, 0)
    c.fx += Canvas(fr).line(path, 0.085).array() * f32(0.035 / 255)
  c.air0 = np.multiply(air.array(), f32(1 / 255), out=ws["air0"])  # lung fields less mediastinum
  c.air = np.multiply(c.air0, g["apex"], out=ws["air"])
  if c.mods.shift:
    tr = Canvas(fr)
    for pts, width in an.trachea_paths(p, c.mods):
      tr.line(pts, width)
    c.A += g["clavicles"]
    c.A -= np.multiply(tr.array(), f32(K_TRACHEA / 255), out=ws["t1"])
  else:
    c.A += g["thin"]
  ys, xs = window(fr, rect(None, 0.25, 0.41, p.dome_left + 0.12, p.dome_left + 0.22))
  q = ((g["u"][:, xs] - f32(0.33)) * f32(1 / 0.075)) ** 2 + (
      (g["v"][ys] - f32(p.dome_left + 0.17)) * f32(1 / 0.045)) ** 2
  c.A[ys, xs] -= np.clip((1 - q) * 8, 0, 1) * f32(0.8 * K_TRACHEA)  # stomach bubble


def _markings(c: _Ctx, side: str, vessels):
  """Adds one lung's vascular markings, weighted by its air, into c.A."""
  ys, xs = win = window(c.fr, an.lung_points(c.patient, side, c.mods))
  r, ang, rw = c.g["rad" + side][win], c.g["ang" + side][win], c.g["rw" + side][:, ys, xs]
  prof, wob, curl = vessels
  ai = (ang + wob[r] * curl[ang.astype(np.intp)]).astype(np.intp)
  t = prof[0][ai] * rw[0] + prof[1][ai] * rw[1] + prof[2][ai] * rw[2]
  t *= f32(0.14 * c.patient.texture * c.tex_amp)
  if c.extra_tex is not None:
    eprof, erw, ring = c.extra_tex
    t += f32(0.06) * (eprof[0][ai] * erw[r] + eprof[1][ai] * ring[r])
  t *= c.air[win]
  t *= c.texgain[win]
  c.A[win] += t


def _bones(c: _Ctx):
  """Posterior and anterior ribs (each half with its side's table) and the spine."""
  g, rows = c.g, c.g["rows"]
  for side in SIDES:
    post, ant = _rib_tables(c.patient, side)
    cols = g["cols" + side]
    rib = ant[g["wa" + side]]
    rib *= g["ext" + side]
    rib += post[g["wp" + side]]
    rib *= f32(0.5) + f32(0.5) * c.air[rows, cols]
    c.A[rows, cols] += rib
  cols, bend = g["spine_cols"], c.mods.bend
  if bend:
    cols = window(c.fr, rect(None, -0.14 + min(bend, 0), 0.14 + max(bend, 0), -1.3, 1.3))[1]
    v = np.broadcast_to(g["v"], (c.fr.size, cols.stop - cols.start))
    c.A[:, cols] += _spine(v, g["u"][:, cols] - an.spine_center(v, c.mods).astype(f32))
  else:
    c.A[:, cols] += g["spine"]


def render_radiograph(patient: an.Patient, findings: Sequence[Finding] = (),
                      size: int = 256) -> np.ndarray:
  """A (size, size) uint8 PA chest radiograph of the patient with the findings drawn in."""
  pf = an.Frame(patient, size)
  c = _Ctx(patient, size, {f.kind: (f, finding_params(patient, f)) for f in findings},
           pf.canonical_box())
  ws, g, (tone, gauss) = c.ws, c.g, _tables(patient.gamma)
  rng = np.random.default_rng(patient.noise_seed)
  np.copyto(ws["i1"], rng.integers(0, 256, (size, size), np.uint8))  # first, whatever the findings
  noise = np.take(gauss, ws["i1"], out=ws["t3"], mode="clip")
  vessels = _vessels(rng, size)
  _normal(c)
  for kind in FINDING_KINDS:
    if kind in c.params and kind in PAINTERS:
      PAINTERS[kind](c, *c.params[kind])
  air = np.multiply(c.air, g["air_w"], out=ws["t1"])
  air *= f32(c.air_gain)
  c.A -= air
  for side in SIDES:
    _markings(c, side, vessels[side])
  _bones(c)
  c.A += box_clip(c.fx, c.box)
  if c._dense is not None:
    c.A += box_clip(np.multiply(c.dense.array(), f32(1 / 255), out=ws["t1"]), c.box)
  t1 = np.take(c.A.ravel(), pf.warp_index(ws["t1"], ws["t2"], ws["i2"]), out=ws["t1"], mode="clip")
  a = blur(t1, ws["t2"], ws["A"])
  gain = 1023.0 * patient.contrast
  a *= f32(gain / 16)
  a += f32(-gain * (0.02 + patient.exposure))
  a += np.multiply(noise, f32(patient.noise_sigma * 1023 / 255 / (0.9 * patient.gamma)), out=t1)
  np.clip(a, 0, 1023, out=a)
  np.copyto(ws["i1"], a, casting="unsafe")
  return np.take(tone, ws["i1"])
