"""Procedural PA chest radiographs: normal anatomy plus the findings of findings.py, drawn in place.

A density map (bright = dense) of soft tissue, lung air, mediastinum, bones, airway and findings is
drawn in the nominal (canonical) frame on grids cached per size, carried to the patient's scale,
rotation and offset by one nearest-pixel warp, softened, tone-mapped with the patient's exposure,
contrast and gamma, plus Gaussian noise. Randomness comes only from the patient's noise_seed: the
noise and the normal lung markings first (the same stream whatever the findings), then one
generator per finding seeded by (noise_seed, kind), so a finding changes pixels only where it is
drawn (`finding_region`). Full-size work reuses per-thread scratch arrays: on small machines the
page faults of fresh 256 KB arrays cost more than the arithmetic on them.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, special

from tfds_cncxr.synthetic import anatomy as an
from tfds_cncxr.synthetic.findings import FINDING_KINDS, SIDES, Finding

f32 = np.float32
_NB, _PAD, _RB = 720, 40, 500  # angle bins of the marking profiles, their padding; rib bins per v
K_BODY, K_AIR, K_TRACHEA, K_RIB, K_ANT_RIB, K_CLAVICLE, K_SPINE = (
    0.75, 0.38, 0.13, 0.09, 0.03, 0.09, 0.06)
_TLS = threading.local()


# ---------------------------------------------------------------- tables and canonical grids


@functools.lru_cache(maxsize=64)
def _tables(gamma: float):
  """The tone curve (1024 density levels -> uint8) and 256 standard-normal quantiles (noise)."""
  return ((255.0 * (np.arange(1024) / 1023.0) ** (0.9 * gamma) + 0.5).astype(np.uint8),
          special.ndtri((np.arange(256) + 0.5) / 256).astype(f32))


def _rib_band(d):
  """Density across a posterior rib at signed distance d from its centre line (cortex brighter)."""
  ad, h = np.abs(d), an.RIB_HALF
  return np.clip((h - ad) / 0.005 + 0.5, 0, 1) * (
      0.72 + 0.4 * np.clip(1.0 - np.abs(ad - 0.78 * h) / (0.3 * h), 0, 1))


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
    g["ang" + side] = (ang + math.pi) * (_NB / 2 / math.pi) + _PAD
    g["rad" + side] = np.rint(np.hypot(dx, dy)).astype(np.intp)
    g["rw" + side] = g["rw"][:, g["rad" + side]]
  cl, tr = _Canvas(fr), _Canvas(fr)
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
_RIB_KERNELS = _rib_band(_X) * K_RIB, np.clip((0.03 - np.abs(_X)) / 0.006 + 0.5, 0, 1) * K_ANT_RIB


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


def _angular(rng, n, lo, hi, width, splits=(), m=2):
  """Angular profiles (padded bins) of m lungs' n vessels, each splitting per `splits` into two
  branches: (m, generations, bins), as weighted deltas blurred by the vessels' angular width."""
  k, length, gens = _NB / (2 * math.pi), _NB + 2 * _PAD, len(splits) + 1
  c, amp = [rng.uniform(lo, hi, (m, n))], [rng.uniform(0.3, 1.0, (m, n))]
  for dlo, dhi in splits:
    split = rng.uniform(dlo, dhi, c[-1].shape + (2,)) * [-1, 1]
    c.append((c[-1][..., None] + split).reshape(m, -1))
    amp.append(np.repeat(amp[-1], 2, axis=1) * 0.9)
  pos = np.clip((np.concatenate(c, 1) + math.pi) * k + _PAD - 0.5, 0, length - 2)
  gen = np.repeat(np.arange(gens), [x.shape[1] for x in c])
  i0 = (pos.astype(np.intp) + (np.arange(m)[:, None] * gens + gen) * length).ravel()
  amp, f = np.concatenate(amp, 1).ravel(), (pos % 1).ravel()
  h = np.bincount(np.concatenate([i0, i0 + 1]), np.concatenate([amp * (1 - f), amp * f]),
                  m * gens * length).reshape(m, gens, length)
  return np.stack([ndimage.convolve1d(h[:, i], _kernel(round(width * 0.7 ** i * k, 2)), axis=1,
                                      mode="constant") for i in range(gens)], 1).astype(f32)


@functools.lru_cache(maxsize=32)
def _kernel(w: float) -> np.ndarray:
  return np.exp(-(np.arange(-int(3 * w) - 1, int(3 * w) + 2) / w) ** 2)


def _vessels(rng, size: int) -> dict:
  """Both lungs' normal markings: angular profiles (trunks with the hilar shadow, branches, twigs)
  and a wobble by radius, scaled by a curl that varies slowly enough with angle not to fold."""
  prof = _angular(rng, 11, -1.5, 1.45, 0.055, ((0.03, 0.08), (0.02, 0.05)))
  th = (np.arange(_NB + 2 * _PAD) - _PAD + 0.5) * (2 * math.pi / _NB) - math.pi
  prof[:, 0] += (0.15 * np.exp(-(th / 0.9) ** 2)).astype(f32)  # the hilar shadow
  r, ph = _grids(size)["r"], rng.uniform(0, 2 * math.pi, (2, 2, 1))
  wob = (7.0 * np.sin(r * 7.0 + ph[:, 0]) + 4.0 * np.sin(r * 17.0 + ph[:, 1])).astype(f32)
  x, knots = np.arange(_NB + 2 * _PAD), rng.uniform(-1.0, 1.0, (2, 10))
  return {s: (prof[i], wob[i], np.interp(x, np.linspace(0, x[-1], 10), knots[i]).astype(f32))
          for i, s in enumerate(SIDES)}


# ---------------------------------------------------------------- drawing helpers


class _Canvas:
  """A uint8 PIL layer drawn in normalised coordinates, fills in [0, 1]."""

  def __init__(self, fr: an.Frame):
    self.fr, self.img = fr, Image.new("L", (fr.size, fr.size), 0)
    self.draw = ImageDraw.Draw(self.img)

  def poly(self, uv, fill=1.0):
    self.draw.polygon(self.fr.pts(np.asarray(uv)).ravel().tolist(), fill=int(round(fill * 255)))
    return self

  def line(self, uv, width, fill=1.0):
    self.draw.line(self.fr.pts(np.asarray(uv)).ravel().tolist(), fill=int(round(fill * 255)),
                   width=max(1, int(round(self.fr.px(width)))))
    return self

  def oval(self, cu, cv, ru, rv, fill=1.0, width=0.0):
    """An axis-aligned ellipse (the canonical frame has no rotation); width > 0: outline only."""
    (x0, x1), (y0, y1) = self.fr.to_px(np.array([cu - ru, cu + ru]), np.array([cv - rv, cv + rv]))
    w, ink = int(round(self.fr.px(width))), int(round(fill * 255))
    self.draw.ellipse((float(x0), float(y0), float(x1), float(y1)), fill=None if w else ink,
                      outline=ink if w else None, width=max(w, 1))
    return self

  def array(self) -> np.ndarray:
    return np.asarray(self.img)


def _window(fr: an.Frame, uv, box=None, pad: float = 2.0):
  """Pixel slices (rows, cols) bounding the normalised points, clipped to box (lo, hi)."""
  p = fr.pts(np.asarray(uv, np.float64).reshape(-1, 2))
  (x0, y0), (x1, y1), (lo, hi) = p.min(0) - pad, p.max(0) + pad + 1, box or (0, fr.size)
  x0, x1, y0, y1 = int(max(x0, lo)), int(min(x1, hi)), int(max(y0, lo)), int(min(y1, hi))
  return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _rect(side, a0, a1, v0, v1):
  s = an.SIDE_SIGN[side] if side else 1.0
  return np.array(((s * a0, v0), (s * a1, v0), (s * a1, v1), (s * a0, v1)))


def _blur(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
  """[1, 2, 1] in both directions into out, unnormalised (x16); edges doubled. b is scratch."""
  for src, dst in ((a, b), (b.T, out.T)):
    np.add(src[:-2], src[2:], out=dst[1:-1])
    dst[1:-1] += src[1:-1]
    dst[1:-1] += src[1:-1]
    dst[0], dst[-1] = src[0] * 4, src[-1] * 4
  return out


def _box_clip(a: np.ndarray, box) -> np.ndarray:
  lo, hi = box
  a[:lo], a[hi:], a[:, :lo], a[:, hi:] = 0, 0, 0, 0
  return a


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
  """Binary dilation by a (2r+1) square, with cumulative sums."""
  m = mask.astype(np.int32)
  for axis in (0, 1):
    c = np.cumsum(np.pad(m, [(r + 1, r) if ax == axis else (0, 0) for ax in (0, 1)]), axis)
    n = m.shape[axis]
    m = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis) - np.take(c, np.arange(n), axis)
  return m > 0


# ---------------------------------------------------------------- the radiograph


class _Ctx:
  """What the painters share while one image is built (in the canonical frame)."""

  def __init__(self, patient, size, params, box):
    self.patient, self.fr, self.params, self.box = patient, an.Frame(None, size), params, box
    self.mods, self.g, self.ws = an.mods_for(params), _grids(size), _scratch(size)
    self.fx, self.texgain = self.ws["fx"], self.ws["tex"]  # finding densities; marking gain
    self.fx.fill(0)
    self.texgain.fill(1)
    self._dense, self.extra_tex, self.air_gain, self.tex_amp = None, None, 1.0, 1.0

  @property
  def dense(self):  # metal and calcium
    if self._dense is None:
      self._dense = _Canvas(self.fr)
    return self._dense


def _normal(c: _Ctx):
  """Soft tissue, lung fields less the mediastinum, clavicles, airway and stomach bubble."""
  p, fr, g, ws = c.patient, c.fr, c.g, c.ws
  c.A = np.multiply(g["body"], f32(p.soft_tissue ** 0.5), out=ws["A"])
  if p.breast:
    c.A += np.multiply(g["breast"], f32(p.breast), out=ws["t1"])
  air = _Canvas(fr).poly(an.lung_points(p, "right", c.mods)).poly(an.lung_points(p, "left", c.mods))
  air.poly(an.mediastinum_points(p, c.mods), 0).oval(*an.aortic_knot(p, c.mods), 0)
  if "tortuous_aorta" in c.params:
    path = an.tortuous_path(p, c.params["tortuous_aorta"][1], c.mods)
    air.line(path, 0.085, 0)
    c.fx += _Canvas(fr).line(path, 0.085).array() * f32(0.035 / 255)
  c.air0 = np.multiply(air.array(), f32(1 / 255), out=ws["air0"])  # lung fields less mediastinum
  c.air = np.multiply(c.air0, g["apex"], out=ws["air"])
  if c.mods.shift:
    tr = _Canvas(fr)
    for pts, width in an.trachea_paths(p, c.mods):
      tr.line(pts, width)
    c.A += g["clavicles"]
    c.A -= np.multiply(tr.array(), f32(K_TRACHEA / 255), out=ws["t1"])
  else:
    c.A += g["thin"]
  ys, xs = _window(fr, _rect(None, 0.25, 0.41, p.dome_left + 0.12, p.dome_left + 0.22))
  q = ((g["u"][:, xs] - f32(0.33)) * f32(1 / 0.075)) ** 2 + (
      (g["v"][ys] - f32(p.dome_left + 0.17)) * f32(1 / 0.045)) ** 2
  c.A[ys, xs] -= np.clip((1 - q) * 8, 0, 1) * f32(0.8 * K_TRACHEA)  # stomach bubble


def _markings(c: _Ctx, side: str, vessels):
  """Adds one lung's vascular markings, weighted by its air, into c.A."""
  ys, xs = win = _window(c.fr, an.lung_points(c.patient, side, c.mods))
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
    cols = _window(c.fr, _rect(None, -0.14 + min(bend, 0), 0.14 + max(bend, 0), -1.3, 1.3))[1]
    v = np.broadcast_to(g["v"], (c.fr.size, cols.stop - cols.start))
    c.A[:, cols] += _spine(v, g["u"][:, cols] - an.spine_center(v, c.mods).astype(f32))
  else:
    c.A[:, cols] += g["spine"]


def render_radiograph(patient: an.Patient, findings: Sequence[Finding] = (),
                      size: int = 256) -> np.ndarray:
  """A (size, size) uint8 PA chest radiograph of the patient with the findings drawn in."""
  pf = an.Frame(patient, size)
  c = _Ctx(patient, size, {f.kind: (f, an.finding_params(patient, f)) for f in findings},
           pf.canonical_box())
  ws, g, (tone, gauss) = c.ws, c.g, _tables(patient.gamma)
  rng = np.random.default_rng(patient.noise_seed)
  np.copyto(ws["i1"], rng.integers(0, 256, (size, size), np.uint8))  # first, whatever the findings
  noise = np.take(gauss, ws["i1"], out=ws["t3"], mode="clip")
  vessels = _vessels(rng, size)
  _normal(c)
  for kind in FINDING_KINDS:
    if kind in c.params and kind in _PAINTERS:
      _PAINTERS[kind](c, *c.params[kind])
  air = np.multiply(c.air, g["air_w"], out=ws["t1"])
  air *= f32(c.air_gain)
  c.A -= air
  for side in SIDES:
    _markings(c, side, vessels[side])
  _bones(c)
  c.A += _box_clip(c.fx, c.box)
  if c._dense is not None:
    c.A += _box_clip(np.multiply(c.dense.array(), f32(1 / 255), out=ws["t1"]), c.box)
  t1 = np.take(c.A.ravel(), pf.warp_index(ws["t1"], ws["t2"], ws["i2"]), out=ws["t1"], mode="clip")
  a = _blur(t1, ws["t2"], ws["A"])
  gain = 1023.0 * patient.contrast
  a *= f32(gain / 16)
  a += f32(-gain * (0.02 + patient.exposure))
  a += np.multiply(noise, f32(patient.noise_sigma * 1023 / 255 / (0.9 * patient.gamma)), out=t1)
  np.clip(a, 0, 1023, out=a)
  np.copyto(ws["i1"], a, casting="unsafe")
  return np.take(tone, ws["i1"])


# ---------------------------------------------------------------- findings


def _effusion(c, f, p):
  s, d = an.SIDE_SIGN[f.side], an.dome_top(c.patient, f.side, c.mods)
  ys, xs = win = _window(c.fr, _rect(f.side, 0.0, 0.8, d - p["h"] - p["m"] - 0.06, d + 0.3), c.box)
  a = c.g["u"][:, xs] * f32(s)
  t = np.clip((a - f32(0.1)) * f32(1 / 0.56), 0, 1)  # the meniscus rises laterally
  fl = np.clip((c.g["v"][ys] - f32(d - p["h"]) + f32(p["m"]) * t * t) * f32(1 / 0.035), 0, 1)
  fl *= np.clip((a - f32(0.03)) * f32(50), 0, 1)
  c.air[win] *= 1 - fl
  c.fx[win] += fl * c.air0[win] * f32(0.05)


def _patchy_shadow(c, f, p):
  cu, cv = p["cu"], p["cv"]
  ys, xs = win = _window(c.fr, _rect(None, cu - 0.2, cu + 0.2, cv - 0.2, cv + 0.2), c.box)
  uw, vw = c.g["u"][:, xs], c.g["v"][ys]
  acc = np.zeros((vw.shape[0], uw.shape[1]), f32)
  for du, dv, sg, am in p["blobs"]:  # separable Gaussians (the canonical frame is axis-aligned)
    k = f32(-0.5 / sg**2)
    acc += (np.exp((vw - f32(cv + dv)) ** 2 * k) * f32(am)) * np.exp((uw - f32(cu + du)) ** 2 * k)
  c.fx[win] += (1 - np.exp(-acc)) * c.air0[win] * f32(0.3)


def _atelectasis(c, f, p):
  cv, hz, am, al, cnv = p["cv"], p["hz"], p["a_med"], p["a_lat"], _Canvas(c.fr)
  if p["wedge"]:  # apex toward the hilum, base on the pleura
    cnv.poly(an.mirror(((am, cv + p["tilt"]), (al + 0.03, cv - 0.38 * hz),
                        (al + 0.03, cv + 0.38 * hz)), f.side))
  else:  # a plate
    cnv.line(an.mirror(((am + 0.04, cv - 0.02), (al + 0.02, cv + p["tilt"] + 0.02)), f.side), 0.075)
  win = _window(c.fr, an.lung_points(c.patient, f.side, c.mods), c.box)
  w = cnv.array()[win] * f32(1 / 255)
  w = _blur(w, np.empty_like(w), np.empty_like(w)) * f32(1 / 16) * c.air0[win]
  c.air[win] *= 1 - f32(0.85) * w
  c.fx[win] += w * f32(0.06)


def _pneumothorax(c, f, p):
  pts, vb = an.lung_points(c.patient, f.side, c.mods), an.dome_top(c.patient, f.side, c.mods) + 0.12
  a = an.LUNG_MEDIAL_A + (np.abs(pts[:, 0]) - an.LUNG_MEDIAL_A) * p["ka"]  # the collapsed lung
  col = np.stack([an.SIDE_SIGN[f.side] * a, vb - (vb - pts[:, 1]) * p["kv"]], 1)
  win = _window(c.fr, pts, c.box)
  inner = _Canvas(c.fr).poly(col).array()[win] * (c.air0[win] * f32(1 / 255))
  pleural = c.air0[win] - inner
  line = _Canvas(c.fr).line(col[(a > 0.16) & (col[:, 1] < vb - 0.25)], 0.014)  # visceral pleura
  c.fx[win] += inner * f32(0.025) - pleural * f32(0.09) + line.array()[win] * f32(0.1 / 255)
  c.texgain[win] *= 1 - pleural


def _emphysema(c, f, p):
  c.air_gain, c.tex_amp = 1.28, 0.45


def _enhanced_texture(c, f, p):
  rng, r = an.finding_rng(c.patient, f, 1), c.g["r"]
  prof = _angular(rng, int(rng.integers(24, 32)), -1.7, 1.7, 0.08, ((0.04, 0.1),), 1)[0]
  fade = np.clip((1.05 - r) / 0.3, 0, 1) * np.clip((r - 0.2) / 0.15, 0, 1)
  ring = 0.5 + 0.5 * np.sin(r * (c.fr.size * 0.62 / 7.0) + rng.uniform(0, 6.3))  # reticulation
  c.extra_tex = (prof * f32(0.8), fade.astype(f32), (ring * fade * 0.5).astype(f32))
  c.tex_amp *= 1.6


def _rib_fracture(c, f, p):
  lv, af = float(an.rib_level(c.patient, f.side, f.rib)), p["af"]
  vf = lv + an.rib_shape(af)
  ys, xs = win = _window(c.fr, _rect(f.side, af - 0.1, af + 0.14, vf - 0.07, vf + 0.11), c.box)
  a = c.g["u"][:, xs] * f32(an.SIDE_SIGN[f.side])
  w = c.g["v"][ys] - an.rib_shape(a) - f32(lv)
  disp = p["step"] * np.clip(1 - (a - af) / 0.13, 0, 1) * (a > af)  # the displaced fragment
  gap = np.clip((np.abs(a - af) - p["gap"] / 2) * 300, 0, 1)
  c.fx[win] += (K_RIB * (_rib_band(w - disp) * gap - _rib_band(w))).astype(f32)


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


_PAINTERS = {
    "effusion": _effusion, "patchy_shadow": _patchy_shadow, "atelectasis": _atelectasis,
    "pneumothorax": _pneumothorax, "emphysema": _emphysema, "enhanced_texture": _enhanced_texture,
    "rib_fracture": _rib_fracture, "calcification": _calcification, "sternal_wires": _sternal_wires,
    "pacemaker": _pacemaker,
    "intubation": lambda c, f, p: _tube(c, an.trachea_line(None, -0.95, p["tip"], c.mods), 0.042),
    "drainage_tube": lambda c, f, p: _tube(c, an.catmull_rom(p["path"], 8), 0.05)}


# ---------------------------------------------------------------- where each finding is drawn


def finding_region(patient: an.Patient, finding: Finding, size: int = 256) -> np.ndarray:
  """A generous (size, size) bool mask of where `finding` changes this patient's image."""
  pf, fr, kind, side = an.Frame(patient, size), an.Frame(None, size), finding.kind, finding.side
  p, box = an.finding_params(patient, finding), pf.canonical_box()
  mods, cnv, rects = an.mods_for({kind: (finding, p)}), _Canvas(fr), []
  if kind in ("enhanced_texture", "emphysema", "pneumothorax", "atelectasis"):
    for sd in ((side,) if side else SIDES):
      cnv.poly(an.lung_points(patient, sd)).poly(an.lung_points(patient, sd, mods))
  elif kind == "effusion":
    d = an.dome_top(patient, side)
    rects.append(_rect(side, 0.0, 0.8, d - p["h"] - p["m"] - 0.06, d + 0.3))
  elif kind == "patchy_shadow":
    rects.append(_rect(None, p["cu"] - 0.2, p["cu"] + 0.2, p["cv"] - 0.2, p["cv"] + 0.2))
  elif kind == "rib_fracture":
    vf = float(an.rib_level(patient, side, finding.rib)) + an.rib_shape(p["af"])
    rects.append(_rect(side, p["af"] - 0.1, p["af"] + 0.14, vf - 0.07, vf + 0.11))
  elif kind in ("calcification", "aortic_knot_prominence"):
    cu, cv, ru, rv = an.aortic_knot(patient, an.Mods(knot_scale=1.7))
    cnv.oval(cu, cv, ru * 1.15, rv * 1.15)
  elif kind == "sternal_wires":
    cnv.poly(_rect(None, -0.07, 0.07, p["v"][0] - 0.06, p["v"][-1] + 0.06))
  elif kind == "pacemaker":
    cu, cv, ru, rv = p["gen"]
    cnv.poly(_rect(None, cu - ru, cu + ru, cv - rv, cv + rv)).line(an.catmull_rom(p["lead"]), 0.05)
  elif kind == "intubation":
    cnv.line(an.trachea_line(None, -1.0, p["tip"] - 0.02), 0.09)
  elif kind == "drainage_tube":
    cnv.line(an.catmull_rom(p["path"]), 0.09)
  elif kind == "scoliosis":
    v = np.linspace(-0.75, 0.78, 40)
    u = an.spine_center(v, mods)
    cnv.poly(np.concatenate([np.stack([np.minimum(u, 0) - 0.08, v], 1),
                             np.stack([np.maximum(u, 0) + 0.08, v], 1)[::-1]]))
  elif kind == "tortuous_aorta":
    cnv.line(an.tortuous_path(patient, p), 0.16)
  elif kind == "mediastinal_shift":
    for m in (an.NO_MODS, mods):
      cnv.poly(an.mediastinum_points(patient, m)).oval(*an.aortic_knot(patient, m))
      for pts, width in an.trachea_paths(None, m):
        cnv.line(pts, width + 0.03)
  mask = _dilate(cnv.array() > 0, 3)
  for uv in rects:
    mask[_window(fr, uv, box)] = True
  out = _box_clip(mask, box).ravel().take(pf.warp_index()).reshape(size, size)
  return _box_clip(out, pf.box)
