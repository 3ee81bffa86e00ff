"""Where each finding is drawn: a generous mask of the pixels a finding may change.

`finding_region` mirrors the windows and shapes of finding_painters.py (and, for the kinds that
move the normal anatomy, both the normal and the moved outlines), dilated, clipped to the findings
box and carried to the patient's frame by the renderer's warp.
"""

from __future__ import annotations

import numpy as np

from tfds_cncxr.synthetic import anatomy as an
from tfds_cncxr.synthetic.drawing import Canvas, box_clip, dilate, rect, window
from tfds_cncxr.synthetic.finding_params import finding_params, mods_for, tortuous_path
from tfds_cncxr.synthetic.findings import SIDES, Finding


def finding_region(patient: an.Patient, finding: Finding, size: int = 256) -> np.ndarray:
  """A generous (size, size) bool mask of where `finding` changes this patient's image."""
  pf, fr, kind, side = an.Frame(patient, size), an.Frame(None, size), finding.kind, finding.side
  p, box = finding_params(patient, finding), pf.canonical_box()
  mods, cnv, rects = mods_for({kind: (finding, p)}), Canvas(fr), []
  if kind in ("enhanced_texture", "emphysema", "pneumothorax", "atelectasis"):
    for sd in ((side,) if side else SIDES):
      cnv.poly(an.lung_points(patient, sd)).poly(an.lung_points(patient, sd, mods))
  elif kind == "effusion":
    d = an.dome_top(patient, side)
    rects.append(rect(side, 0.0, 0.8, d - p["h"] - p["m"] - 0.06, d + 0.3))
  elif kind == "patchy_shadow":
    rects.append(rect(None, p["cu"] - 0.2, p["cu"] + 0.2, p["cv"] - 0.2, p["cv"] + 0.2))
  elif kind == "rib_fracture":
    vf = float(an.rib_level(patient, side, finding.rib)) + an.rib_shape(p["af"])
    rects.append(rect(side, p["af"] - 0.1, p["af"] + 0.14, vf - 0.07, vf + 0.11))
  elif kind in ("calcification", "aortic_knot_prominence"):
    cu, cv, ru, rv = an.aortic_knot(patient, an.Mods(knot_scale=1.7))
    cnv.oval(cu, cv, ru * 1.15, rv * 1.15)
  elif kind == "sternal_wires":
    cnv.poly(rect(None, -0.07, 0.07, p["v"][0] - 0.06, p["v"][-1] + 0.06))
  elif kind == "pacemaker":
    cu, cv, ru, rv = p["gen"]
    cnv.poly(rect(None, cu - ru, cu + ru, cv - rv, cv + rv)).line(an.catmull_rom(p["lead"]), 0.05)
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
    cnv.line(tortuous_path(patient, p), 0.16)
  elif kind == "mediastinal_shift":
    for m in (an.NO_MODS, mods):
      cnv.poly(an.mediastinum_points(patient, m)).oval(*an.aortic_knot(patient, m))
      for pts, width in an.trachea_paths(None, m):
        cnv.line(pts, width + 0.03)
  mask = dilate(cnv.array() > 0, 3)
  for uv in rects:
    mask[window(fr, uv, box)] = True
  out = box_clip(mask, box).ravel().take(pf.warp_index()).reshape(size, size)
  return box_clip(out, pf.box)
