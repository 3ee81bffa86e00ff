"""The synthetic radiograph renderer: deterministic, and every finding drawn where it is said to be.

Sides are the patient's: a right-sided finding lies on the viewer's left (x < 128).
"""

import functools

import numpy as np
import pytest
from PIL import Image

from tfds_cncxr.synthetic import anatomy, render
from tfds_cncxr.synthetic.findings import (FINDING_KINDS, SIDES, SPEC_BY_KIND, ZONES, Finding,
                                           sample_findings)

_RIB_IN_ZONE = {"upper": 4, "middle": 6, "lower": 8}


def _cases():
  for kind in FINDING_KINDS:
    spec = SPEC_BY_KIND[kind]
    for side in SIDES if spec.sided else (None,):
      for zone in ZONES if spec.zoned else (None,):
        rib = _RIB_IN_ZONE[zone] if kind == "rib_fracture" else None
        yield Finding(kind, side=side, zone=zone, rib=rib)


CASES = tuple(_cases())
_rng = np.random.default_rng(2024)
PATIENTS = (anatomy.Patient(noise_seed=7), anatomy.sample_patient(_rng, "M", 35),
            anatomy.sample_patient(_rng, "F", 72),
            # the extremes of scale, rotation and offset, for the findings box
            anatomy.Patient(width_scale=1.04, height_scale=1.04, rotation_deg=4.0, offset_x=-3.0,
                            offset_y=3.0, noise_seed=11),
            anatomy.Patient(width_scale=1.04, height_scale=0.95, rotation_deg=-4.0, offset_x=3.0,
                            offset_y=-3.0, dome_left=0.41, dome_right=0.37, noise_seed=12))


def _id(f):
  return "-".join(str(x) for x in (f.kind, f.side, f.zone) if x)


@functools.lru_cache(maxsize=None)
def _normal(i):
  return render.render_radiograph(PATIENTS[i], ()).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _diff(i, f):
  """(signed difference from the normal image, region mask) of patient i with finding f."""
  d = render.render_radiograph(PATIENTS[i], (f,)).astype(np.int32) - _normal(i)
  return d, render.finding_region(PATIENTS[i], f)


def _small(img):  # the 112 x 112 area-averaged view a model may be trained on
  return np.asarray(Image.fromarray(img).resize((112, 112), Image.BOX), np.float64)


def test_shape_and_dtype():
  f = Finding("effusion", side="left")
  for size in (256, 128, 224):
    img = render.render_radiograph(PATIENTS[1], (f,), size)
    assert img.shape == (size, size) and img.dtype == np.uint8
    region = render.finding_region(PATIENTS[1], f, size)
    assert region.shape == (size, size) and region.dtype == np.bool_ and region.any()
  img = render.render_radiograph(PATIENTS[0], ())
  assert 20 < img.mean() < 200 and img.std() > 30  # neither blank nor saturated


def test_deterministic():
  rng = np.random.default_rng(5)
  studies = [(anatomy.sample_patient(rng, "U", 50), sample_findings(rng)) for _ in range(6)]
  first = [render.render_radiograph(p, fs).tobytes() for p, fs in studies]
  again = [render.render_radiograph(p, fs).tobytes() for p, fs in reversed(studies)][::-1]
  assert first == again  # the same bytes, whatever was rendered in between
  p = studies[0][0]
  other = anatomy.Patient(**{**p.__dict__, "noise_seed": p.noise_seed + 1})
  assert render.render_radiograph(other, studies[0][1]).tobytes() != first[0]


def test_sampled_studies_render():
  rng = np.random.default_rng(9)
  for _ in range(20):
    sex, age = ("M", "F", "U")[int(rng.integers(3))], float(rng.uniform(1, 99))
    img = render.render_radiograph(anatomy.sample_patient(rng, sex, age), sample_findings(rng))
    assert img.shape == (256, 256) and img.dtype == np.uint8


@pytest.mark.parametrize("f", CASES, ids=_id)
def test_finding_is_drawn_inside_its_region(f):
  for i in range(len(PATIENTS)):
    d, region = _diff(i, f)
    mass = np.abs(d)
    assert mass.sum() > 0, "the finding left the image unchanged"
    assert mass[region].sum() >= 0.9 * mass.sum()
    inside = np.zeros_like(region)
    inside[28:228, 28:228] = True
    assert mass[~inside].sum() == 0, "the finding leaves the 28..228 box"
    assert not region[~inside].any()


@pytest.mark.parametrize("f", CASES, ids=_id)
def test_finding_is_visible_at_112(f):
  for i in range(3):
    small = _small((_normal(i) + _diff(i, f)[0]).astype(np.uint8)) - _small(
        _normal(i).astype(np.uint8))
    assert np.abs(small).max() >= 10


@pytest.mark.parametrize("f", [f for f in CASES if f.side and f.kind not in (
    "scoliosis", "mediastinal_shift")], ids=_id)
def test_side_is_the_patients(f):
  for i in range(len(PATIENTS)):
    mass = np.abs(_diff(i, f)[0])
    viewer_left = mass[:, :128].sum() / mass.sum()
    assert viewer_left >= 0.75 if f.side == "right" else viewer_left <= 0.25


@pytest.mark.parametrize("kind", ("scoliosis", "mediastinal_shift"))
def test_displacement_toward_side(kind):
  """The bright structure (spine, heart) moves: it appears on the side it moves to."""
  x = np.arange(256)[None, :]
  for side in SIDES:
    for i in range(len(PATIENTS)):
      d = _diff(i, Finding(kind, side=side))[0]
      gained, lost = np.clip(d, 0, None), np.clip(-d, 0, None)
      shift = (gained * x).sum() / gained.sum() - (lost * x).sum() / lost.sum()
      assert shift < -4 if side == "right" else shift > 4


def test_patchy_shadow_zones_run_top_to_bottom():
  y = np.arange(256)[:, None]
  for side in SIDES:
    for i in range(len(PATIENTS)):
      cy = []
      for zone in ZONES:
        mass = np.abs(_diff(i, Finding("patchy_shadow", side=side, zone=zone))[0])
        cy.append((mass * y).sum() / mass.sum())
      assert cy[0] + 15 < cy[1] < cy[2] - 15, cy


def test_rib_fracture_sits_in_its_zone():
  y = np.arange(256)[:, None]
  p = PATIENTS[0]
  fr = anatomy.Frame(p, 256)
  for side in SIDES:
    bounds = anatomy.zone_bounds(p, side)
    for rib in range(3, 10):
      zone = "upper" if rib <= 4 else ("middle" if rib <= 6 else "lower")
      mass = np.abs(_diff(0, Finding("rib_fracture", side=side, zone=zone, rib=rib))[0])
      v = (fr.to_px(0.0, 0.0)[1] - (mass * y).sum() / mass.sum()) / -fr.half
      assert bounds[zone][0] <= v <= bounds[zone][1], (side, rib, v, bounds[zone])
