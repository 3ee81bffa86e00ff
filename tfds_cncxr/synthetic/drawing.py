"""Drawing primitives shared by the renderer and the finding painters (canonical frame).

A uint8 PIL canvas addressed in normalised coordinates, pixel windows around normalised shapes,
rectangles on one side, the [1, 2, 1] blur, box clipping and square dilation of masks; the density
profile across a posterior rib and the angular profiles of vessel markings (NB bins a turn, PAD bins
of padding either end). The K_ constants are the densities of the normal structures.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tfds_cncxr.synthetic import anatomy as an

f32 = np.float32
NB, PAD = 720, 40  # angle bins of the marking profiles, their padding
K_BODY, K_AIR, K_TRACHEA, K_RIB, K_ANT_RIB, K_CLAVICLE, K_SPINE = (
    0.75, 0.38, 0.13, 0.09, 0.03, 0.09, 0.06)


# ---------------------------------------------------------------- drawing helpers


class Canvas:
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


def window(fr: an.Frame, uv, box=None, pad: float = 2.0):
  """Pixel slices (rows, cols) bounding the normalised points, clipped to box (lo, hi)."""
  p = fr.pts(np.asarray(uv, np.float64).reshape(-1, 2))
  (x0, y0), (x1, y1), (lo, hi) = p.min(0) - pad, p.max(0) + pad + 1, box or (0, fr.size)
  x0, x1, y0, y1 = int(max(x0, lo)), int(min(x1, hi)), int(max(y0, lo)), int(min(y1, hi))
  return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def rect(side, a0, a1, v0, v1):
  """Corners (4, 2) of the box a0..a1 laterally on `side` (None: a is u), v0..v1 down."""
  s = an.SIDE_SIGN[side] if side else 1.0
  return np.array(((s * a0, v0), (s * a1, v0), (s * a1, v1), (s * a0, v1)))


def blur(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
  """[1, 2, 1] in both directions into out, unnormalised (x16); edges doubled. b is scratch."""
  for src, dst in ((a, b), (b.T, out.T)):
    np.add(src[:-2], src[2:], out=dst[1:-1])
    dst[1:-1] += src[1:-1]
    dst[1:-1] += src[1:-1]
    dst[0], dst[-1] = src[0] * 4, src[-1] * 4
  return out


def box_clip(a: np.ndarray, box) -> np.ndarray:
  """Zeroes a (in place) outside the square box (lo, hi) of pixels; returns it."""
  lo, hi = box
  a[:lo], a[hi:], a[:, :lo], a[:, hi:] = 0, 0, 0, 0
  return a


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
  """Binary dilation by a (2r+1) square, with cumulative sums."""
  m = mask.astype(np.int32)
  for axis in (0, 1):
    c = np.cumsum(np.pad(m, [(r + 1, r) if ax == axis else (0, 0) for ax in (0, 1)]), axis)
    n = m.shape[axis]
    m = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis) - np.take(c, np.arange(n), axis)
  return m > 0


# ---------------------------------------------------------------- density profiles


def rib_band(d):
  """Density across a posterior rib at signed distance d from its centre line (cortex brighter)."""
  ad, h = np.abs(d), an.RIB_HALF
  return np.clip((h - ad) / 0.005 + 0.5, 0, 1) * (
      0.72 + 0.4 * np.clip(1.0 - np.abs(ad - 0.78 * h) / (0.3 * h), 0, 1))


def angular(rng, n, lo, hi, width, splits=(), m=2):
  """Angular profiles (padded bins) of m lungs' n vessels, each splitting per `splits` into two
  branches: (m, generations, bins), as weighted deltas blurred by the vessels' angular width."""
  k, length, gens = NB / (2 * math.pi), NB + 2 * PAD, len(splits) + 1
  c, amp = [rng.uniform(lo, hi, (m, n))], [rng.uniform(0.3, 1.0, (m, n))]
  for dlo, dhi in splits:
    split = rng.uniform(dlo, dhi, c[-1].shape + (2,)) * [-1, 1]
    c.append((c[-1][..., None] + split).reshape(m, -1))
    amp.append(np.repeat(amp[-1], 2, axis=1) * 0.9)
  pos = np.clip((np.concatenate(c, 1) + math.pi) * k + PAD - 0.5, 0, length - 2)
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
