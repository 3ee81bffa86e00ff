"""A rule-based, negation-aware labeler for Chinese chest X-ray reports.

`label_report` reads the 48 Table 1 keywords off a report, each POSITIVE, NEGATED or UNCERTAIN,
and the positive (anatomy, lesion) pairs the clinical metric scores. It follows the CheXpert
labeler's plan (mention extraction, then negation and uncertainty classification, then
aggregation), with NegBio-style cue scopes adapted to Chinese:

* Text: the report is `clean_report`ed; spans index the cleaned text. Sentences end at 。;
  clauses end at ，；： and a contrast word (但是, 但, 然而, 而) starts a new clause, so no cue
  reaches across one. A clause that opens with an example word (如, 例如, 比如, 诸如, 包括) goes
  on the one before: in 没有急性病变的迹象，如积液、气胸或肺不张 the negation covers the list.
* Mentions: `labeler_lexicon.find_terms`, Table 1's terms plus the labeler's own surface forms
  (手术夹, 切除术, 导管, 不透明, 稍钝, ...), most characters covered: 无肺纹理 is
  no_lung_texture, 心影 is heart, 肋骨折 is rib + fracture. Words that contain a term but name no
  finding (影像, 影响, 鼻导管, 锁骨下) are read as nothing. A cue inside a term or such a word (无 of
  无肺纹理, 不 of 不张 and of 不透明) is part of it, not a cue.
* Cues (`labeler_lexicon`; longest match first, so 不除外 is uncertain while 除外 alone negates):
  - negation: 未见, 未, 无, 不, 没有, 没, 排除, 除外 (so also 不大, 未见异常, 未见明显异常);
    uncertainty: 不除外, 不能(完全)除外/排除, 无法排除, 难以排除, 未能排除, 不排除, 未除外, 可能,
    考虑, 疑, 可疑, 似, 待排, 有无, 是否, 或许, 也许, ？, 请结合临床.
  - A cue governs the mentions after it in its clause. One with nothing after it is a predicate
    about what precedes it: an uncertainty cue (骨折可能) hedges every earlier mention of the
    clause; a negation cue (心影不大, 主动脉结未见增宽) is a normal verdict, see below.
  - Normal verdicts (锐利, 居中, 清晰, 光整, 光滑, 正常, 自然, 规整, 通畅, 对称, 良好, 完整,
    清楚, and a trailing negation cue) look back over the anatomy and the neutral descriptors
    (纹理, 透亮度, and a bare 影 right after its anatomy: 肺门影) just before them and mark them
    NEGATED, stopping at any other lesion: 两肺纹理清晰 negates lung and texture, but in
    片状影边缘清晰 the verdict is about the margin, so the shadow stays.
    A verdict with 欠/不 in front (欠清晰, 不锐利, 不对称) is an abnormal description, not a cue; so
    are 不均, 不规则, 不清, 不整, 不齐, 不全, 不连续. A statement of no change (无明显变化,
    未见改变, 没有变化) is not a denial: the finding is as it was, so still there.
  - Alternatives (或, 或者, 和/或, 及/或) hedge the lesions they join: the nearest before (with
    those listed before it with 、) and the nearest after (肺不张或实变, 积液和/或胸膜增厚), but not
    a finding the clause states first and then explains (不透明影最可能是肺不张或瘢痕).
  - Removal (拔除, 移除, 撤除, 拔出, 取出, 撤出, so 已被拔除, 已移除, 已撤除) negates the devices
    (intubation, drainage, insert) of its clause, before or after it.
  - Resolution (已吸收, 已完全吸收, 已被吸收, 已经消退, 完全吸收, ...) negates the lesions before it
    in its clause; partial change (较前吸收, 较前减少) leaves them present.
  - A mention under an uncertainty cue is UNCERTAIN even if also negated (a hedged denial is a
    hedge); else NEGATED under a negation, removal or resolution cue; else UNCERTAIN when joined
    by an alternative (没有积液或气胸 stays a denial); else a lesion is POSITIVE.
* Attachment: a lesion belongs to the nearest anatomy before it in its clause, else the nearest
  after it; else to the organ its own name carries (气胸 -> chest); else to the nearest anatomy
  before it in its sentence (其内无肺纹理; a site named later in the sentence belongs to later
  findings). 肺不张 and 肺气肿 spell their organ and always belong to the lung. Anatomies
  coordinated by 及/和/与/、/以及 count as one site (气管及纵隔向右侧移位 -> trachea and
  mediastinum).
* Labels: an anatomy takes the status of the lesions attached to it and of verdicts about it;
  an anatomy with neither (两膈面低平: an abnormality outside the lexicon) labels nothing. A
  negated lesion does not negate the organ its name merely implies (未见气胸 says nothing about
  the chest). Across mentions, POSITIVE > UNCERTAIN > NEGATED (CheXpert's rule). Every positive
  lesion yields a pair with each anatomy it is attached to.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from cnx2rg_jax.text import labeler_lexicon as lex
from cnx2rg_jax.text.labeler_lexicon import (ALTERNATIVE_CUES, CONTRAST_WORDS, DEVICE_KEYS,
                                             EXEMPLIFIERS, IMPLIED_ANATOMY, NEGATION_CUES,
                                             NORMAL_VERDICTS, ORGAN_IN_NAME, PSEUDO_CUES,
                                             REMOVAL_CUES, RESOLUTION_CUES, UNCERTAINTY_CUES)
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text.cleaning import clean_report, split_sentences

CLAUSE_PUNCT = "，；："
# Descriptors whose abnormality lies in their modifier (纹理增强 vs 纹理清晰): a verdict after
# them is about them, unlike a finding noun such as 影, whose verdict is about its margins.
NEUTRAL_LESIONS = frozenset({"texture", "transparency"})
_COORDINATION = re.compile(r"^(?:以及|[及和与、])(?:[左右双两]侧?)?$")

_NEG, _UNC, _VERDICT, _PSEUDO = "neg", "unc", "verdict", "pseudo"
_ALT, _REMOVED, _RESOLVED = "alt", "removed", "resolved"
_CUES = sorted([(c, _NEG) for c in NEGATION_CUES] + [(c, _UNC) for c in UNCERTAINTY_CUES]
               + [(c, _VERDICT) for c in NORMAL_VERDICTS] + [(c, _PSEUDO) for c in PSEUDO_CUES]
               + [(c, _ALT) for c in ALTERNATIVE_CUES] + [(c, _REMOVED) for c in REMOVAL_CUES]
               + [(c, _RESOLVED) for c in RESOLUTION_CUES],
               key=lambda ck: -len(ck[0]))
_RANK = {kw.POSITIVE: 3, kw.UNCERTAIN: 2, kw.NEGATED: 1}


@dataclasses.dataclass
class Mention:
  """One lexicon term in the cleaned report: span, keyword and what the rules made of it.

  `status` is a keywords code, or None for an anatomy about which the report says nothing the
  lexicon can name. `anatomy` lists the sites a lesion is attached to (empty for anatomies).
  """

  start: int
  end: int
  key: str
  kind: str  # "anatomy" | "lesion"
  status: Optional[int] = None
  anatomy: tuple[str, ...] = ()
  implied: bool = False  # the site came from the lesion's own name
  sites: list = dataclasses.field(default_factory=list, repr=False)  # attached anatomy mentions
  neg: bool = False
  unc: bool = False
  alt: bool = False  # offered as one of alternatives (积液或胸膜增厚)
  neutral: bool = False  # a bare 影 right after its anatomy (肺门影): that anatomy's image


@dataclasses.dataclass
class ReportLabels:
  """Labels of one report: `keywords` holds only mentioned keywords ({key: 1|0|-1}), `pairs`
  the sorted positive (anatomy, lesion) pairs, `mentions` every term found in `text`, the
  cleaned report their spans index."""

  keywords: dict
  pairs: list
  mentions: list
  text: str = ""


def _clauses(sentence: str, offset: int) -> list[tuple[int, int]]:
  """(start, end) spans of the clauses of a sentence; a contrast word opens a clause."""
  cuts = [0]
  i = 0
  while i < len(sentence):
    if sentence[i] in CLAUSE_PUNCT:
      if not sentence.startswith(EXEMPLIFIERS, i + 1):
        cuts.append(i + 1)
    else:
      for w in CONTRAST_WORDS:
        if sentence.startswith(w, i) and i > cuts[-1]:
          cuts.append(i)
          i += len(w) - 1
          break
    i += 1
  cuts.append(len(sentence))
  return [(offset + a, offset + b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _cues(text: str, start: int, end: int, terms: list[Mention],
          masked: frozenset = frozenset()) -> list[tuple[int, str]]:
  """(position, kind) of the cues in text[start:end], skipping characters inside terms and the
  `masked` positions (words that name no finding)."""
  covered = masked.union(i for m in terms for i in range(m.start, m.end))
  found, i = [], start
  while i < end:
    if i in covered:
      i += 1
      continue
    for cue, kind in _CUES:
      # A cue must not run into a term: 不 of 不张 belongs to the term.
      if (text.startswith(cue, i) and i + len(cue) <= end
          and covered.isdisjoint(range(i, i + len(cue)))):
        if kind != _PSEUDO:
          found.append((i, kind))
        i += len(cue)
        break
    else:
      i += 1
  return found


def _apply_cues(clause: list[Mention], cues: list[tuple[int, str]], text: str) -> None:
  """Marks the clause's mentions neg/unc according to the cue rules of the module docstring."""
  for pos, kind in cues:
    after = [m for m in clause if m.start >= pos]
    before = [m for m in clause if m.end <= pos]
    if kind == _ALT:
      for m in _alternatives(clause, pos, text):
        m.alt = True
    elif kind == _REMOVED:
      for m in clause:
        m.neg = m.neg or m.key in DEVICE_KEYS
    elif kind == _RESOLVED:
      for m in before:
        m.neg = m.neg or m.kind == "lesion"
    elif kind != _VERDICT and after:
      for m in after:
        setattr(m, "unc" if kind == _UNC else "neg", True)
    elif kind == _UNC:
      for m in before:
        m.unc = True
    else:  # a normal verdict, or a negation cue with nothing after it
      for m in reversed(before):
        if m.kind == "lesion" and m.key not in NEUTRAL_LESIONS and not m.neutral:
          break
        m.neg = True


def _alternatives(clause: list[Mention], pos: int, text: str) -> list[Mention]:
  """The lesions that an alternative cue at `pos` joins: the nearest before it, with those listed
  before that one with 、 (A、B或C), and the nearest after it; not a finding the clause states
  first and then explains (不透明影最可能是肺不张或瘢痕: the shadow is there)."""
  lesions = [m for m in clause if m.kind == "lesion"]
  before = [m for m in lesions if m.end <= pos]
  out = before[-1:]
  for prev, m in zip(reversed(before[:-1]), reversed(before[1:])):
    if text[prev.end:m.start] != "、":
      break
    out.append(prev)
  return out + [m for m in lesions if m.start >= pos][:1]


def _site_groups(mentions: list[Mention], text: str) -> list[list[Mention]]:
  """Anatomy mentions in order, coordinated ones (肺门及纵隔) grouped together."""
  groups: list[list[Mention]] = []
  for m in mentions:
    if m.kind != "anatomy":
      continue
    if groups and _COORDINATION.match(text[groups[-1][-1].end:m.start]):
      groups[-1].append(m)
    else:
      groups.append([m])
  return groups


def _nearest(groups: list[list[Mention]], lesion: Mention,
             look_after: bool = True) -> Optional[list[Mention]]:
  before = [g for g in groups if g[-1].end <= lesion.start]
  if before or not look_after:
    return before[-1] if before else None
  after = [g for g in groups if g[0].start >= lesion.end]
  return after[0] if after else None


def _attach(sentence: list[Mention], clauses: list[list[Mention]], text: str) -> None:
  """Sets each lesion's `anatomy` by the attachment rules of the module docstring."""
  sentence_groups = _site_groups(sentence, text)
  for clause in clauses:
    clause_groups = _site_groups(clause, text)
    for m in clause:
      if m.kind != "lesion":
        continue
      name = text[m.start:m.end]
      site = None if name in ORGAN_IN_NAME else _nearest(clause_groups, m)
      if site is None and name in IMPLIED_ANATOMY:
        m.anatomy, m.implied = (IMPLIED_ANATOMY[name],), True
        continue
      if site is None:  # a site named later in the sentence belongs to later findings
        site = _nearest(sentence_groups, m, look_after=False)
      m.sites = list(site or ())
      m.anatomy = tuple(dict.fromkeys(a.key for a in m.sites))


def _status(m: Mention) -> Optional[int]:
  if m.unc:
    return kw.UNCERTAIN
  if m.neg:
    return kw.NEGATED
  if m.alt:
    return kw.UNCERTAIN
  return kw.POSITIVE if m.kind == "lesion" else None


def label_report(report: str) -> ReportLabels:
  """Keyword labels, positive (anatomy, lesion) pairs and mentions of a raw Chinese report.

  Only keywords the report mentions appear in `keywords`; the value merges all their mentions,
  POSITIVE > UNCERTAIN > NEGATED. Raises ValueError for a non-str report.
  """
  text = clean_report(report)
  found, not_findings = lex.find_terms(text)
  terms = [Mention(s, e, key, kw.keyword(key).kind) for s, e, key in found]
  for prev, m in zip(terms, terms[1:]):
    m.neutral = text[m.start:m.end] == "影" and prev.kind == "anatomy" and prev.end == m.start
  masked = frozenset(i for s, e in not_findings for i in range(s, e))
  offset = 0
  for sentence in split_sentences(text):
    in_sentence = [m for m in terms if offset <= m.start < offset + len(sentence)]
    clauses = []
    for start, end in _clauses(sentence, offset):
      clause = [m for m in in_sentence if start <= m.start < end]
      _apply_cues(clause, _cues(text, start, end, clause, masked), text)
      clauses.append(clause)
    _attach(in_sentence, clauses, text)
    offset += len(sentence)
  for m in terms:
    m.status = _status(m)

  # An anatomy mention takes its own verdict and the statuses of the lesions attached to it.
  for m in terms:
    for site in m.sites:
      if m.status is not None and _RANK[m.status] > _RANK.get(site.status, 0):
        site.status = m.status
  labels: dict[str, int] = {}
  pairs = set()
  for m in terms:
    keys = [(m.key, m.status)]
    if m.implied and m.status != kw.NEGATED:
      # 未见气胸 denies the finding, not the organ its name implies; so only other statuses.
      keys.append((m.anatomy[0], m.status))
    for key, value in keys:
      if value is not None and _RANK[value] > _RANK.get(labels.get(key), 0):
        labels[key] = value
    if m.kind == "lesion" and m.status == kw.POSITIVE:
      pairs.update((a, m.key) for a in m.anatomy)
  ordered = {k: labels[k] for k in kw.KEYWORD_KEYS if k in labels}
  return ReportLabels(ordered, sorted(pairs), terms, text)
