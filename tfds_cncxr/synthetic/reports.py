"""Writes the Chinese report of a synthetic study, with its exact CN-RadGraph annotation.

Every statement is built from annotated pieces, so the generator knows each entity's span, label
and keyword, and each relation, without parsing its own text. Abnormal findings get the statements
a radiologist would write for them; structures without findings get normal (DNO) statements or
explicit negations (未见, 无). Phrasing, sentence grouping and order vary by the study's rng.

Two invariants, checked by the tests:
- every statement is true of the image drawn from the same findings;
- every lexicon term that `keywords.find_terms` reads in the text lies inside an annotated entity
  span of the same keyword, so a lexicon-based labeler can recover the labels.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from cnx2rg_jax.text import report_graph
from tfds_cncxr.synthetic.findings import Finding

MAX_REPORT_CHARS = 150
_SIDE_ZH = {"right": "右", "left": "左"}
_ZONE_ZH = {"upper": "上", "middle": "中", "lower": "下"}


@dataclasses.dataclass
class _Clause:
  """A clause under construction: text pieces, entities with local spans, relations."""

  text: str = ""
  entities: list = dataclasses.field(default_factory=list)
  relations: list = dataclasses.field(default_factory=list)

  def say(self, s: str) -> "_Clause":
    self.text += s
    return self

  def ent(self, s: str, label: str, keyword: str = "") -> int:
    self.entities.append({"start": len(self.text), "end": len(self.text) + len(s),
                          "label": label, "keyword": keyword})
    self.text += s
    return len(self.entities) - 1

  def rel(self, head: int, tail: int, label: str) -> None:
    self.relations.append({"head": head, "tail": tail, "label": label})


@dataclasses.dataclass(frozen=True)
class SyntheticReport:
  text: str
  entities: list  # [{"start", "end", "label", "keyword"}]
  relations: list  # [{"head", "tail", "label"}]
  keyword_labels: np.ndarray  # int8[48], keywords.py codes
  pairs: list  # sorted positive (anatomy, lesion) pairs


def _pick(rng: np.random.Generator, options: Sequence):
  return options[int(rng.integers(len(options)))]


# --- statements: each returns a _Clause; `c` is the clause, `r` the study's rng -----------------

def _site(c: _Clause, text: str, keyword: str) -> int:
  return c.ent(text, "Anatomy", keyword)


def _lesion(c: _Clause, text: str, keyword: str, site: Optional[int], label: str = "DPO") -> int:
  i = c.ent(text, label, keyword)
  if site is not None:
    c.rel(i, site, "located_at")
  return i


def _normal(c: _Clause, site_text: str, site_kw: str, verdict: str) -> _Clause:
  s = _site(c, site_text, site_kw)
  _lesion(c, verdict, "", s, "DNO")
  return c


def _enhanced_texture(r, f):
  c = _Clause()
  s = _site(c, _pick(r, ["两肺", "双肺"]), "lung")
  tex = c.ent("纹理", "NO", "texture")
  words = _pick(r, [["增强"], ["增多"], ["增多", "、", "增粗"], ["增粗"]])
  for w in words:
    if w == "、":
      c.say(w)
    else:
      c.rel(tex, _lesion(c, w, "enhanced", s), "modify")
  return c


def _zone_site(c: _Clause, r, side: str, zone: str) -> int:
  sz, zz = _SIDE_ZH[side], _ZONE_ZH[zone]
  return _site(c, _pick(r, [f"{sz}{zz}肺野", f"{sz}肺{zz}野"]), "lung")


def _patchy_shadow(r, f):
  c = _Clause()
  s = _zone_site(c, r, f.side, f.zone)
  c.say(_pick(r, ["见", "可见"]))
  _lesion(c, _pick(r, ["片状密度增高影", "斑片状影", "片状影", "斑片影"]), "shadow", s)
  c.say(_pick(r, ["", "，边缘欠清", "，密度不均"]))
  return c


def _atelectasis(r, f):
  c = _Clause()
  sz = _SIDE_ZH[f.side]
  lobe = {"upper": "上叶", "middle": "中叶" if f.side == "right" else "舌段", "lower": "下叶"}[f.zone]
  s = _site(c, f"{sz}肺{lobe}", "lung")
  _lesion(c, "不张", "atelectasis", s)
  return c


def _emphysema(r, f):
  c = _Clause()
  s = _site(c, _pick(r, ["两肺", "双肺"]), "lung")
  t = c.ent("透亮度", "NO", "transparency")
  c.rel(t, _lesion(c, "增高", "", s), "modify")
  c.say("，呈")
  _lesion(c, "肺气肿", "emphysema", s)
  c.say("改变，")
  _lesion(c, "低平", "", _site(c, "两膈面", "diaphragmatic"))
  return c


def _pneumothorax(r, f):
  c = _Clause()
  sz = _SIDE_ZH[f.side]
  c.say(f"{sz}侧")
  gas = c.ent("气胸", "DPO", "gas")
  c.say("，")
  s = _site(c, f"{sz}侧胸腔", "chest")
  c.rel(gas, s, "located_at")
  c.say(_pick(r, ["外带", "外侧带"]))
  t = c.ent("透亮度", "NO", "transparency")
  c.rel(t, _lesion(c, "增高", "", s), "modify")
  c.say("，其内")
  _lesion(c, _pick(r, ["无肺纹理", "未见肺纹理"]), "no_lung_texture", s)
  return c


def _effusion(r, f):
  c = _Clause()
  sz = _SIDE_ZH[f.side]

  def angle():
    _lesion(c, "变钝", "blur", _site(c, f"{sz}侧肋膈角", "costophrenic_angle"))

  def fluid():
    s = _site(c, f"{sz}侧胸腔", "chest")
    c.say(_pick(r, ["", "少量"]))
    _lesion(c, "积液", "effusion", s)

  first, second = (angle, fluid) if r.random() < 0.5 else (fluid, angle)
  first()
  c.say("，")
  second()
  return c


def _mediastinal_shift(r, f):
  c = _Clause()
  t = _site(c, "气管", "trachea")
  c.say("及")
  m = _site(c, "纵隔", "mediastinum")
  c.say(f"向{_SIDE_ZH[f.side]}侧")
  shift = _lesion(c, "移位", "shift", m)
  c.rel(shift, t, "located_at")
  return c


def _aorta(r, fs: dict):
  """One clause on the aorta: its findings, or a normal statement."""
  c = _Clause()
  parts = []
  if "tortuous_aorta" in fs:
    s = _site(c, "主动脉", "aorta")
    _lesion(c, "迂曲", "torque", s)
    c.say(_pick(r, ["", "、延长"]))
    parts.append(True)
  knot = [k for k in ("aortic_knot_prominence", "calcification") if k in fs]
  if knot:
    if parts:
      c.say("，")
    s = _site(c, "主动脉结", "aortic_knot")
    if "aortic_knot_prominence" in fs:
      _lesion(c, "突出", "prominence", s)
    if "calcification" in fs:
      c.say("伴" if "aortic_knot_prominence" in fs else _pick(r, ["", "见"]))
      _lesion(c, "钙化", "calcification", s)
  if not c.text:
    return _normal(c, "主动脉结", "aortic_knot", _pick(r, ["不宽", "未见增宽"]))
  return c


def _rib_fracture(r, f):
  c = _Clause()
  s = _site(c, f"{_SIDE_ZH[f.side]}侧第{f.rib}肋骨", "rib")
  _lesion(c, "骨折", "fracture", s)
  return c


def _scoliosis(r, f):
  c = _Clause()
  s = _site(c, _pick(r, ["胸椎", "脊柱"]), "vertebrae")
  c.say(_pick(r, ["", "轻度"]))
  _lesion(c, "侧弯", "side_bend", s)
  c.say(f"，凸向{_SIDE_ZH[f.side]}侧")
  return c


def _sternal_wires(r, f):
  c = _Clause()
  s = _site(c, "胸骨", "chest")
  _lesion(c, "术后", "postoperative", s)
  c.say(_pick(r, ["改变，见金属固定钢丝", "改变，可见金属缝合钢丝"]))
  return c


def _pacemaker(r, f):
  c = _Clause()
  s = _site(c, f"{_SIDE_ZH[f.side]}上胸壁", "chest")
  c.say("见")
  dev = c.ent("起搏器", "NO", "insert")
  c.rel(dev, _lesion(c, _pick(r, ["置入", "植入"]), "insert", s), "modify")
  return c


def _intubation(r, f):
  c = _Clause()
  s = _site(c, "气管", "trachea")
  c.say("内见")
  _lesion(c, "插管", "intubation", s)
  c.say("，末端位于隆突上方")
  return c


def _drainage_tube(r, f):
  c = _Clause()
  s = _site(c, f"{_SIDE_ZH[f.side]}侧胸腔", "chest")
  c.say("内见")
  _lesion(c, "引流管", "drainage", s)
  return c


_FINDING_CLAUSES = {
    "enhanced_texture": _enhanced_texture, "patchy_shadow": _patchy_shadow,
    "atelectasis": _atelectasis, "emphysema": _emphysema, "pneumothorax": _pneumothorax,
    "effusion": _effusion, "mediastinal_shift": _mediastinal_shift,
    "rib_fracture": _rib_fracture, "scoliosis": _scoliosis, "sternal_wires": _sternal_wires,
    "pacemaker": _pacemaker, "intubation": _intubation, "drainage_tube": _drainage_tube,
}
_LUNG_KINDS = ("enhanced_texture", "patchy_shadow", "atelectasis", "emphysema", "pneumothorax")
_DEVICE_KINDS = ("sternal_wires", "pacemaker", "intubation", "drainage_tube")


def _texture_normal(r) -> _Clause:
  c = _Clause()
  s = _site(c, _pick(r, ["两肺", "双肺"]), "lung")
  tex = c.ent("纹理", "NO", "texture")
  c.rel(tex, _lesion(c, _pick(r, ["清晰", "走行自然"]), "", s, "DNO"), "modify")
  return c


def _negation(site_text: str, site_kw: str, verdict: str, lesion_text: str, lesion_kw: str):
  c = _Clause()
  s = _site(c, site_text, site_kw) if site_text else None
  neg = _lesion(c, verdict, "", s, "DNO")
  c.rel(c.ent(lesion_text, "NO", lesion_kw), neg, "modify")
  return c


def _blocks(r, findings: Sequence[Finding]) -> list[tuple[str, list[_Clause]]]:
  """(block name, clauses) in reading order; block names mark which blocks are optional."""
  fs = {f.kind: f for f in findings}
  clause = lambda kind: _FINDING_CLAUSES[kind](r, fs[kind])  # noqa: E731
  lung = [clause(k) for k in _LUNG_KINDS if k in fs]
  if not {"enhanced_texture", "emphysema", "pneumothorax"} & set(fs) and r.random() < 0.6:
    lung.insert(0, _texture_normal(r))
  if not lung:
    lung = [_normal(_Clause(), _pick(r, ["两肺", "双肺野", "两肺野"]), "lung",
                    _pick(r, ["未见明显实质性病变", "未见明显异常", "未见异常密度"]))]
  blocks = [("lung", lung)]
  if "pneumothorax" not in fs and r.random() < 0.15:
    blocks.append(("optional", [_negation("", "", "未见明确", "气胸", "gas")]))
  blocks.append(("optional", [_normal(_Clause(), "双侧肺门", "hilum",
                                      _pick(r, ["不大", "未见增大", "结构清晰"]))]))
  blocks.append(("heart", [_normal(_Clause(), *_pick(r, [("心影", "heart"), ("心脏", "heart")]),
                                   _pick(r, ["不大", "大小形态未见异常", "大小、形态正常"]))]))
  if "mediastinal_shift" in fs:
    blocks.append(("mediastinum", [clause("mediastinal_shift")]))
  else:
    blocks.append(("optional", [_normal(_Clause(), "纵隔", "mediastinum", "居中")]))
  aorta_kinds = {"tortuous_aorta", "aortic_knot_prominence", "calcification"} & set(fs)
  blocks.append(("aorta" if aorta_kinds else "optional", [_aorta(r, fs)]))
  if "effusion" in fs:
    other = "左" if fs["effusion"].side == "right" else "右"
    diaphragm = [clause("effusion"),
                 _normal(_Clause(), f"{other}侧肋膈角", "costophrenic_angle", "锐利")]
  elif "emphysema" in fs:
    diaphragm = [_normal(_Clause(), "两侧肋膈角", "costophrenic_angle", "锐利")]
  else:
    diaphragm = [_normal(_Clause(), _pick(r, ["两膈面", "双侧膈面"]), "diaphragmatic",
                         _pick(r, ["光整", "光滑"])),
                 _normal(_Clause(), _pick(r, ["两侧肋膈角", "双侧肋膈角"]), "costophrenic_angle",
                         "锐利")]
    if r.random() < 0.15:
      diaphragm.append(_negation("两侧胸腔", "chest", "未见", "积液", "effusion"))
  blocks.append(("diaphragm", diaphragm))
  bones = [clause(k) for k in ("rib_fracture", "scoliosis") if k in fs]
  if bones:
    blocks.append(("bones", bones))
  else:
    normal_bone = _pick(r, [("骨性胸廓", "未见异常"), ("所见骨质", "未见明显异常")])
    blocks.append(("optional", [_normal(_Clause(), normal_bone[0], "bone", normal_bone[1])]))
    if r.random() < 0.1:
      blocks.append(("optional", [_negation("所见肋骨", "rib", "未见", "骨折", "fracture")]))
  devices = [clause(k) for k in _DEVICE_KINDS if k in fs]
  if devices:
    # Devices are written first or last, as hospitals differ.
    blocks.insert(0 if r.random() < 0.3 else len(blocks), ("devices", devices))
  return blocks


def _join(blocks: list[tuple[str, list[_Clause]]], r) -> _Clause:
  out = _Clause()
  for b, (_, clauses) in enumerate(blocks):
    for k, c in enumerate(clauses):
      offset, base = len(out.text), len(out.entities)
      out.text += c.text
      out.entities += [{**e, "start": e["start"] + offset, "end": e["end"] + offset}
                       for e in c.entities]
      out.relations += [{**x, "head": x["head"] + base, "tail": x["tail"] + base}
                        for x in c.relations]
      last = k == len(clauses) - 1
      out.text += "。" if last and (b == len(blocks) - 1 or r.random() < 0.7) else "，"
  return out


def write_report(findings: Sequence[Finding], rng: np.random.Generator) -> SyntheticReport:
  """The report of a study with `findings`; deterministic given the rng state."""
  blocks = _blocks(rng, findings)
  joined = _join(blocks, rng)
  # Drop optional normal statements, last first, until the report fits.
  while len(joined.text) > MAX_REPORT_CHARS and any(n == "optional" for n, _ in blocks):
    drop = max(i for i, (n, _) in enumerate(blocks) if n == "optional")
    blocks = blocks[:drop] + blocks[drop + 1:]
    joined = _join(blocks, rng)
  labels, pairs = report_graph.read_graph(joined.entities, joined.relations)
  return SyntheticReport(joined.text, joined.entities, joined.relations, labels, pairs)
