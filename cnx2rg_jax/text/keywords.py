"""The 48 keywords of the paper's Table 1 and their Chinese terms.

This is the one lexicon that the synthetic generator, the clinical labeler, the jieba user
dictionary and the keyword classifier head share (the labeler reads some more surface forms,
kept in `text/labeler_lexicon.py` so that nothing else changes with them). The order of
`KEYWORDS` is the order of every 48-wide label vector in the project: 24 anatomy keywords, then
24 lesion keywords, each in the order Table 1 prints them.

Label values follow the CheXpert labeler's convention, with one extra code so that a label vector
can be a dense int8 array: POSITIVE, NEGATED, UNCERTAIN, and NOT_MENTIONED for "absent".
"""

from __future__ import annotations

import dataclasses
from typing import Optional

POSITIVE = 1
NEGATED = 0
UNCERTAIN = -1
NOT_MENTIONED = -2


@dataclasses.dataclass(frozen=True)
class Keyword:
  key: str  # snake_case English name, as in labeler output: "costophrenic_angle"
  name: str  # the name Table 1 prints ("Yessels" is read as Vessels)
  kind: str  # "anatomy" | "lesion"
  terms: tuple[str, ...]  # Chinese surface forms; the first is the canonical one


# `find_terms` reads a text as the terms covering the most characters, so "主动脉结" wins over
# "主动脉" and "肺门" over "肺". A term may be shared by no two keywords.
KEYWORDS: tuple[Keyword, ...] = (
    # --- anatomy (Table 1, left half) ---
    Keyword("chest", "Chest", "anatomy", ("胸廓", "胸腔", "胸部", "胸壁", "胸骨")),
    Keyword("hilum", "Hilum", "anatomy", ("肺门",)),
    Keyword("heart", "Heart", "anatomy", ("心影", "心脏")),  # not 心 alone: 中心静脉
    Keyword("diaphragmatic", "Diaphragmatic", "anatomy", ("膈面",)),
    Keyword("costophrenic_angle", "Costophrenic Angle", "anatomy", ("肋膈角",)),
    Keyword("lung", "Lung", "anatomy",
            ("肺", "两肺", "双肺", "肺野", "右肺", "左肺", "肺内", "肺叶")),
    Keyword("aorta", "Aorta", "anatomy", ("主动脉",)),
    Keyword("rib", "Rib", "anatomy", ("肋骨", "肋")),
    Keyword("mediastinum", "Mediastinum", "anatomy", ("纵隔",)),
    Keyword("pleura", "Pleura", "anatomy", ("胸膜",)),
    Keyword("vertebrae", "Vertebrae", "anatomy", ("胸椎", "脊柱", "椎体")),
    Keyword("aortic_knot", "Aortic Knot", "anatomy", ("主动脉结",)),
    Keyword("aortic_arch", "Aortic Arch", "anatomy", ("主动脉弓",)),
    Keyword("fissures", "Fissures", "anatomy", ("叶间裂", "斜裂")),
    Keyword("bone", "Bone", "anatomy", ("骨质", "骨性胸廓", "骨")),
    Keyword("trachea", "Trachea", "anatomy", ("气管",)),
    Keyword("neck", "Neck", "anatomy", ("颈部",)),
    Keyword("horizontal_split", "Horizontal Split", "anatomy", ("水平裂",)),
    Keyword("bronchi", "Bronchi", "anatomy", ("支气管",)),
    Keyword("bowel", "Bowel", "anatomy", ("肠管", "肠腔", "肠")),
    Keyword("diaphragm", "Diaphragm", "anatomy", ("膈肌", "膈")),
    Keyword("pulmonary_artery", "Pulmonary artery", "anatomy", ("肺动脉",)),
    Keyword("belly", "Belly", "anatomy", ("腹部", "膈下")),
    Keyword("vessels", "Vessels", "anatomy", ("血管",)),
    # --- lesions (Table 1, right half) ---
    Keyword("postoperative", "Postoperative", "lesion", ("术后",)),
    Keyword("gas", "Gas", "lesion", ("积气", "气胸", "游离气体")),
    Keyword("shadow", "Shadow", "lesion",
            ("影", "阴影", "片状影", "斑片影", "密度增高影", "条索影", "斑片状影", "片状密度增高影")),
    Keyword("texture", "Texture", "lesion", ("纹理",)),
    Keyword("calcification", "Calcification", "lesion", ("钙化", "钙化灶")),
    Keyword("insert", "Insert", "lesion", ("置入", "植入", "起搏器")),
    Keyword("no_lung_texture", "No Lung Texture", "lesion", ("无肺纹理", "未见肺纹理", "肺纹理消失")),
    Keyword("effusion", "Effusion", "lesion", ("积液",)),
    Keyword("transparency", "Transparency", "lesion", ("透亮度", "透光度")),
    Keyword("fracture", "Fracture", "lesion", ("骨折",)),
    Keyword("prominence", "Prominence", "lesion", ("突出", "凸出")),
    Keyword("side_bend", "Side Bend", "lesion", ("侧弯",)),
    Keyword("intubation", "Intubation", "lesion", ("插管",)),
    Keyword("deformed", "Deformed", "lesion", ("变形", "畸形")),
    Keyword("drainage", "Drainage", "lesion", ("引流", "引流管")),
    Keyword("emphysema", "Emphysema", "lesion", ("肺气肿", "气肿")),
    Keyword("atelectasis", "Atelectasis", "lesion", ("不张", "肺不张")),
    # "Flame" is rare (6/3/4): read as the flame-shaped descriptor 火焰状.
    Keyword("flame", "Flame", "lesion", ("火焰状",)),
    Keyword("torque", "Torque", "lesion", ("迂曲", "扭曲")),
    Keyword("blur", "Blur", "lesion", ("模糊", "变钝")),
    Keyword("disappeared", "Disappeared", "lesion", ("消失",)),
    Keyword("weaken", "Weaken", "lesion", ("减弱", "减低")),
    Keyword("enhanced", "Enhanced", "lesion", ("增强", "增多", "增粗")),
    Keyword("shift", "Shift", "lesion", ("移位", "偏移")),
)

KEYWORD_KEYS: tuple[str, ...] = tuple(k.key for k in KEYWORDS)
KEYWORD_INDEX: dict[str, int] = {k.key: i for i, k in enumerate(KEYWORDS)}
ANATOMY_KEYS: tuple[str, ...] = tuple(k.key for k in KEYWORDS if k.kind == "anatomy")
LESION_KEYS: tuple[str, ...] = tuple(k.key for k in KEYWORDS if k.kind == "lesion")
NUM_KEYWORDS = len(KEYWORDS)

# Every Chinese term -> its keyword key; built once, checked for collisions at import.
TERM_TO_KEY: dict[str, str] = {}
for _kw in KEYWORDS:
  for _term in _kw.terms:
    if _term in TERM_TO_KEY:
      raise AssertionError(f"term {_term!r} is claimed by {TERM_TO_KEY[_term]!r} and {_kw.key!r}")
    TERM_TO_KEY[_term] = _kw.key
del _kw, _term

# Terms ordered longest first: `find_terms` tries them in this order, so of two equally good
# readings the one with the longer term at the earlier position wins.
TERMS_LONGEST_FIRST: tuple[str, ...] = tuple(sorted(TERM_TO_KEY, key=lambda t: (-len(t), t)))


def keyword(key: str) -> Keyword:
  """The keyword named `key`; a KeyError names the unknown key."""
  try:
    return KEYWORDS[KEYWORD_INDEX[key]]
  except KeyError:
    raise KeyError(f"unknown keyword {key!r}; known: {', '.join(KEYWORD_KEYS)}") from None


def find_terms(text: str, lexicon: Optional["Lexicon"] = None) -> list[tuple[int, int, str]]:
  """Lexicon terms in `text`: the non-overlapping spans that cover the most characters, and
  among those the fewest (so the longest) terms.

  Returns (start, end, keyword_key) spans in order. "主动脉结" is read as aortic_knot (not aorta),
  "无肺纹理" as no_lung_texture (not a negated texture), "心影" as heart, and "右侧第5肋骨折" as
  肋 + 骨折 (rib, fracture), where a greedy longest match would take 肋骨 and lose the fracture.
  `lexicon` (default: Table 1's terms, `LEXICON`) lets the labeler read with more surface forms.
  """
  by_first_char = (lexicon or LEXICON).by_first_char
  term_to_key = (lexicon or LEXICON).term_to_key
  n = len(text)
  # best[i] = (characters covered, -terms used) of the best reading of text[i:]; choice[i] the
  # term taken at i (None: skip the character).
  best = [(0, 0)] * (n + 1)
  choice: list = [None] * (n + 1)
  for i in range(n - 1, -1, -1):
    best[i], choice[i] = best[i + 1], None
    for term in by_first_char.get(text[i], ()):
      if text.startswith(term, i):
        covered, neg_terms = best[i + len(term)]
        candidate = (covered + len(term), neg_terms - 1)
        if candidate > best[i]:
          best[i], choice[i] = candidate, term
  found, i = [], 0
  while i < n:
    term = choice[i]
    if term is None:
      i += 1
    else:
      found.append((i, i + len(term), term_to_key[term]))
      i += len(term)
  return found


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Surface forms -> keyword keys, indexed by first character (longest first) for `find_terms`."""

  term_to_key: dict
  by_first_char: dict

  @classmethod
  def of(cls, term_to_key: dict) -> "Lexicon":
    by_first_char: dict[str, tuple[str, ...]] = {}
    for term in sorted(term_to_key, key=lambda t: (-len(t), t)):
      by_first_char[term[0]] = by_first_char.get(term[0], ()) + (term,)
    return cls(dict(term_to_key), by_first_char)


LEXICON = Lexicon.of(TERM_TO_KEY)
