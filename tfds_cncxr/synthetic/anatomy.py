"""Per-patient variation and the geometry of a synthetic PA chest radiograph.

Geometry lives in a normalised frame: u runs to the viewer's right, v downwards, and the image spans
about [-1, 1] in both at nominal scale. `Frame` maps it to pixels with the patient's scale, rotation
and offset. Shapes of one lung are written with a = lateral distance from the midline; the patient's
right lung is drawn on the viewer's left (u = -a), as on a PA radiograph.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np

SIDE_SIGN = {"right": -1.0, "left": 1.0}  # viewer-u direction of the patient's side
APEX_V = -0.665  # lung apex
LUNG_MEDIAL_A = 0.06
RIB_HALF = 0.026  # half thickness of a posterior rib
RIB_AF = 0.48  # lateral distance where a rib's level (and a fracture) is placed


@dataclasses.dataclass(frozen=True)
class Patient:
  """What varies between patients. The defaults are a nominal adult."""

  width_scale: float = 1.0  # thorax width (u scale)
  height_scale: float = 1.0  # thorax height (v scale)
  rotation_deg: float = 0.0  # positive turns the image clockwise
  offset_x: float = 0.0  # pixels at 256
  offset_y: float = 0.0
  exposure: float = 0.0  # shifts the density window; positive = darker film
  contrast: float = 1.0
  gamma: float = 1.0
  noise_sigma: float = 4.0  # grey levels
  heart_scale: float = 1.0  # lateral size of the cardiac silhouette
  rib_spacing: float = 1.0
  dome_right: float = 0.34  # v of the dome tops; the right (viewer-left) one is higher
  dome_left: float = 0.38
  soft_tissue: float = 1.0  # habitus: chest wall density
  breast: float = 0.0  # breast shadow density (0 for men)
  texture: float = 1.0  # strength of the normal lung markings
  noise_seed: int = 0


def sample_patient(rng: np.random.Generator, sex: str, age: float) -> Patient:
  """Draws one patient. sex: 'M' | 'F' | 'U'; age in years."""
  old = float(np.clip((float(age) - 45.0) / 35.0, -0.7, 1.0))  # -0.7 young .. 1 at 80
  male, female = sex == "M", sex == "F"
  size = 0.012 if male else (-0.012 if female else 0.0)
  u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
  return Patient(
      width_scale=float(np.clip(u(0.965, 1.025) + size, 0.95, 1.04)),
      height_scale=float(np.clip(u(0.965, 1.025) + size, 0.95, 1.04)),
      rotation_deg=u(-4.0, 4.0),
      offset_x=u(-3.0, 3.0),
      offset_y=u(-3.0, 3.0),
      exposure=u(-0.04, 0.04),
      contrast=u(0.92, 1.1) - 0.05 * max(old, 0.0),
      gamma=u(0.85, 1.15),
      noise_sigma=u(2.5, 5.5),
      heart_scale=float(np.clip(u(0.92, 1.08) + 0.06 * max(old, 0.0), 0.9, 1.16)),
      rib_spacing=u(0.97, 1.03),
      dome_right=u(0.30, 0.37),
      dome_left=u(0.35, 0.41),
      soft_tissue=u(0.9, 1.1) + (0.05 if male else 0.0),
      breast=u(0.5, 1.0) if female else 0.0,
      texture=u(0.85, 1.1) + 0.15 * max(old, 0.0),
      noise_seed=int(rng.integers(0, 2**31 - 1)),
  )


@dataclasses.dataclass(frozen=True)
class Mods:
  """Geometric changes that findings make to the normal anatomy."""

  shift: float = 0.0  # mediastinal shift in viewer u
  bend: float = 0.0  # spine bend amplitude in viewer u (sign = direction of the convexity)
  emphysema: bool = False
  knot_scale: float = 1.0
  raise_right: float = 0.0  # hemidiaphragm raised by this much v
  raise_left: float = 0.0


NO_MODS = Mods()


class Frame:
  """Maps the normalised frame to the pixels of a size x size image: through the patient's scale,
  rotation and offset, or (patient=None) the nominal, canonical frame the renderer draws in."""

  def __init__(self, patient: Optional[Patient], size: int):
    p = patient or Patient()
    self.size, self.half = size, size / 2.0
    self.sx, self.sy = p.width_scale, p.height_scale
    th = math.radians(p.rotation_deg)
    self.cos, self.sin = math.cos(th), math.sin(th)
    k = size / 256.0
    self.c = (size - 1) / 2.0
    self.cx, self.cy = self.c + p.offset_x * k, self.c + p.offset_y * k
    self.box = (int(round(28 * k)), int(round(228 * k)))  # findings stay in [lo, hi)

  def to_px(self, u, v):
    u = np.asarray(u, np.float64) * self.sx * self.half
    v = np.asarray(v, np.float64) * self.sy * self.half
    return self.cx + self.cos * u - self.sin * v, self.cy + self.sin * u + self.cos * v

  def pts(self, uv: np.ndarray) -> np.ndarray:
    """(N, 2) normalised points -> (N, 2) pixel points."""
    x, y = self.to_px(uv[:, 0], uv[:, 1])
    return np.stack([x, y], axis=1)

  def px(self, d: float) -> float:
    """A normalised length in pixels."""
    return d * self.half * 0.5 * (self.sx + self.sy)

  def warp_index(self, xf=None, yf=None, out=None) -> np.ndarray:
    """For every pixel of this frame, the flat index of the canonical-frame pixel it shows; xf and
    yf are optional (size, size) float32 scratch arrays, out an intp one."""
    f, n = np.float32, self.size
    r = np.arange(n, dtype=f)
    xs, ys = r[None, :], r[:, None]
    xf = np.empty((n, n), f) if xf is None else xf
    yf = np.empty((n, n), f) if yf is None else yf
    kx, ky, qx, qy = self.cos / self.sx, self.cos / self.sy, self.sin / self.sx, self.sin / self.sy
    np.add(xs * f(kx), ys * f(qx) + f(self.c + 0.5 - kx * self.cx - qx * self.cy), out=xf)
    np.add(ys * f(ky), xs * f(-qy) + f(self.c + 0.5 - ky * self.cy + qy * self.cx), out=yf)
    for a in (xf, yf):
      np.clip(a, 0, n - 0.5, out=a)
      np.floor(a, out=a)
    yf *= n
    yf += xf
    out = np.empty((n, n), np.intp) if out is None else out
    np.copyto(out, yf, casting="unsafe")
    return out

  def canonical_box(self) -> tuple:
    """A square of canonical pixels that this frame shows inside its findings box (2 px spare)."""
    lo, hi = self.box
    h, bc = (hi - 1 - lo) / 2.0 - 2.0, (hi - 1 + lo) / 2.0
    cs, sn = abs(self.cos), abs(self.sin)
    r = min((h - abs(self.cx - bc)) / (cs * self.sx + sn * self.sy),
            (h - abs(self.cy - bc)) / (sn * self.sx + cs * self.sy))
    return int(math.ceil(self.c - r)), int(math.floor(self.c + r)) + 1


def catmull_rom(points, n: int = 8) -> np.ndarray:
  """A smooth open curve through the (N, 2) control points, n samples per span."""
  p = np.asarray(points, np.float64)
  p = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
  t = np.linspace(0.0, 1.0, n, endpoint=False)[None, :, None]
  p0, p1, p2, p3 = p[:-3, None], p[1:-2, None], p[2:-1, None], p[3:, None]
  out = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
               + (3 * p1 - p0 - 3 * p2 + p3) * t * t * t)
  return np.concatenate([out.reshape(-1, 2), p[-2:-1]])


def ellipse(cu, cv, ru, rv, n: int = 32, a0: float = 0.0, a1: float = 2 * math.pi):
  t = np.linspace(a0, a1, n)
  return np.stack([cu + ru * np.cos(t), cv + rv * np.sin(t)], axis=1)


def _frozen(a: np.ndarray) -> np.ndarray:
  a.flags.writeable = False
  return a


def mirror(points_a, side: str) -> np.ndarray:
  """(a, v) points of one side -> (u, v)."""
  p = np.array(points_a, np.float64)
  p[:, 0] *= SIDE_SIGN[side]
  return p


# ---------------------------------------------------------------- lungs, diaphragm and zones


def dome_top(patient: Patient, side: str, mods: Mods = NO_MODS) -> float:
  d = patient.dome_right if side == "right" else patient.dome_left
  d -= mods.raise_right if side == "right" else mods.raise_left
  return d + (0.09 if mods.emphysema else 0.0)


def dome_v(a, patient: Patient, side: str, mods: Mods = NO_MODS):
  """The diaphragm's upper contour at lateral distance a; its costophrenic end is at a=0.665."""
  k = 0.55 if mods.emphysema else 1.0  # emphysema lowers and flattens the dome
  a = np.asarray(a, np.float64)
  lat = np.clip((a - 0.30) / 0.365, 0.0, None) ** 2.2
  med = np.clip((0.30 - a) / 0.24, 0.0, None) ** 2
  return dome_top(patient, side, mods) + k * (0.18 * lat + 0.08 * med)


_LUNG_UPPER = ((0.06, -0.25), (0.075, -0.47), (0.115, -0.595), (0.2, -0.655), (0.3, -0.665),
               (0.4, -0.625), (0.5, -0.53), (0.575, -0.37), (0.625, -0.16), (0.652, 0.07),
               (0.663, 0.3))


@functools.lru_cache(maxsize=1)
def _upper_curve() -> np.ndarray:
  return catmull_rom(np.array(_LUNG_UPPER), 6)


@functools.lru_cache(maxsize=256)
def lung_points(patient: Patient, side: str, mods: Mods = NO_MODS) -> np.ndarray:
  """Outline of one lung field, (N, 2) normalised (u, v), before the mediastinum covers it."""
  ends = dome_v(np.array([LUNG_MEDIAL_A, 0.665]), patient, side, mods)
  curve = np.concatenate([[[LUNG_MEDIAL_A, ends[0]]], _upper_curve(), [[0.665, ends[1]]]])
  if mods.emphysema:  # larger: wider and a little taller
    curve[:, 0] = LUNG_MEDIAL_A + (curve[:, 0] - LUNG_MEDIAL_A) * 1.03
    curve[:, 1] -= 0.025 * np.clip((0.2 - curve[:, 1]) / 0.8, 0, 1)
  a = np.linspace(curve[-1, 0], LUNG_MEDIAL_A, 24)
  base = np.stack([a, dome_v(a, patient, side, mods)], axis=1)
  return _frozen(mirror(np.concatenate([curve, base[1:]]), side))


def zone_bounds(patient: Patient, side: str) -> dict:
  """v ranges of the upper, middle and lower thirds of one (normal) lung field."""
  top, h = APEX_V, dome_top(patient, side) - APEX_V
  return {z: (top + h * i / 3, top + h * (i + 1) / 3) for i, z in enumerate(("upper", "middle",
                                                                            "lower"))}


def lung_span(patient: Patient, side: str, v: float) -> tuple:
  """(medial a, lateral a) of the normal lung field at height v, clear of the mediastinum."""
  upper = _upper_curve()
  lat = upper[np.argmin(upper[:, 1]):]
  med = mediastinum_points(patient)
  border = med[med[:, 0] < 0] if side == "right" else med[med[:, 0] > 0][::-1]
  a_med = float(np.interp(v, border[:, 1], np.abs(border[:, 0])))
  if side == "left":
    cu, cv, ru, rv = aortic_knot(patient)
    a_med = max(a_med, cu + ru * math.sqrt(max(0.0, 1 - ((v - cv) / rv) ** 2)))
  return max(a_med, LUNG_MEDIAL_A) + 0.03, float(np.interp(v, lat[:, 1], lat[:, 0]))


def rib_level(patient: Patient, side: str, k):
  """v of posterior rib k (int or array) at a = RIB_AF; ribs 3-4 sit in the upper zone, 5-6 in
  the middle one, 7-9 in the lower one."""
  h = dome_top(patient, side) - APEX_V
  return APEX_V + h * (0.5 + (np.asarray(k) - 5.5) * 0.13 * patient.rib_spacing)


def rib_shape(a):
  """How a posterior rib's centre line runs: v offset from its level at RIB_AF, by lateral a."""
  d = a - 0.25
  return np.where(d < 0, 0.8, 1.0) * d * d - (RIB_AF - 0.25) ** 2


@functools.lru_cache(maxsize=2)
def clavicle_points(side: str) -> np.ndarray:
  pts = ((0.05, -0.52), (0.2, -0.545), (0.36, -0.585), (0.52, -0.64), (0.68, -0.7), (0.86, -0.75))
  return _frozen(mirror(catmull_rom(np.array(pts), 5), side))


# ---------------------------------------------------------------- mediastinum, heart, airway


def shift_at(v, mods: Mods):
  """Mediastinal shift at height v: full below v=-0.46, fading to nothing above v=-0.68."""
  return mods.shift * np.clip((np.asarray(v, np.float64) + 0.68) / 0.22, 0.0, 1.0)


def shifted(p, mods: Mods, below: float = -2.0) -> np.ndarray:
  """Points moved with the mediastinum (only those below v=`below`)."""
  p = np.array(p, np.float64)
  p[:, 0] += shift_at(p[:, 1], mods) * (p[:, 1] > below)
  return p


_MEDIASTINUM = ((-0.09, -0.98), (-0.1, -0.68), (-0.105, -0.6), (-0.125, -0.4), (-0.13, -0.2),
                (-0.165, -0.06), (-0.195, 0.08), (-0.205, 0.22), (-0.19, 0.34), (-0.16, 0.46),
                (-0.14, 0.7), (0.3, 0.7), (0.355, 0.46), (0.375, 0.33), (0.355, 0.18), (0.3, 0.05),
                (0.205, -0.07), (0.175, -0.17), (0.15, -0.26), (0.1, -0.42), (0.095, -0.6),
                (0.09, -0.68), (0.085, -0.98))


@functools.lru_cache(maxsize=256)
def mediastinum_points(patient: Patient, mods: Mods = NO_MODS) -> np.ndarray:
  """Outline of the heart and mediastinum (the knot is separate), (N, 2) normalised."""
  p = np.array(_MEDIASTINUM)
  w = np.clip((p[:, 1] + 0.2) / 0.2, 0, 1)  # the heart below v=-0.2 scales laterally
  p[:, 0] = p[:, 0] + w * (p[:, 0] - 0.07) * (patient.heart_scale - 1.0)
  return _frozen(shifted(p, mods))


def aortic_knot(patient: Patient, mods: Mods = NO_MODS) -> tuple:
  """(centre u, centre v, radius u, radius v) of the aortic knot (viewer right of the trachea)."""
  k = mods.knot_scale
  cu = 0.105 + 0.045 * (k - 1.0)
  cv = -0.37 - 0.02 * (k - 1.0)
  return cu + float(shift_at(cv, mods)), cv, 0.07 * k, 0.058 * k


def trachea_paths(patient: Patient, mods: Mods = NO_MODS) -> list:
  """[(points (N, 2), width)] of the trachea and the main bronchi."""
  carina = (-0.005, -0.3)
  trachea = np.array(((0.0, -1.05), (0.0, -0.68), (-0.01, -0.55), carina))
  right = np.array((carina, (-0.07, -0.22), (-0.12, -0.15)))
  left = np.array((carina, (0.08, -0.24), (0.17, -0.18)))
  return [(shifted(trachea, mods), 0.058), (shifted(right, mods), 0.042),
          (shifted(left, mods), 0.036)]


def trachea_line(patient: Patient, v0: float, v1: float, mods: Mods = NO_MODS) -> np.ndarray:
  """Points down the trachea's centre from v0 to v1."""
  pts = trachea_paths(patient, mods)[0][0]
  v = np.linspace(v0, v1, 10)
  return np.stack([np.interp(v, pts[:, 1], pts[:, 0]), v], 1)


def spine_center(v, mods: Mods = NO_MODS):
  """u of the spine's centre line; a bend is a C-curve between v=-0.62 and v=0.62."""
  v = np.asarray(v, np.float64)
  t = np.clip((v + 0.62) / 1.24, 0.0, 1.0)
  return mods.bend * np.sin(math.pi * t)


def hilum(side: str) -> tuple:
  """Where one lung's vessels converge (hidden by the mediastinum, lateral to it the hilum)."""
  return SIDE_SIGN[side] * 0.03, (-0.1 if side == "right" else -0.14)
