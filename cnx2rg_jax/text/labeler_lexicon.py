"""The words the rule labeler knows: its cues, and the surface forms it reads beyond Table 1's.

Table 1's lexicon (`text/keywords.py`) is shared with the synthetic writer, the jieba user
dictionary and the keyword head, so the labeler's extra wording lives here, where none of them
reads it: adding a word here changes no synthetic report, vocabulary or trained model.

Each tuple is one kind of cue; `labeler.py` says what each kind does. Cues are matched longest
first, so a longer cue hides the shorter ones inside it (不除外 is a hedge, not 除外).
"""

from __future__ import annotations

from cnx2rg_jax.text import keywords as kw

NEGATION_CUES = ("未见", "未", "无", "不", "没有", "没", "排除", "除外")
UNCERTAINTY_CUES = (
    "不除外", "不能除外", "不能排除", "不排除", "未除外", "可能", "考虑", "疑", "可疑", "似",
    "待排", "待排除", "？", "请结合临床",
    # hedged denials: "cannot (fully) exclude" is a hedge, not a negation
    "不能完全排除", "不能完全除外", "无法排除", "无法除外", "难以排除", "难以除外", "未能排除",
    "未能除外",
    # whether, perhaps: 注意有无气胸, 是否有积液, 或许
    "有无", "是否", "或许", "也许")
# Alternatives: the findings a clause offers as alternatives are uncertain (肺不张或实变), unless
# the clause denies them all (没有积液或气胸).
ALTERNATIVE_CUES = ("和/或", "及/或", "或者", "或")
# Removal of a device (引流管已拔除, 拔除胃管后): the clause's devices are no longer there.
REMOVAL_CUES = ("拔除", "移除", "撤除", "拔出", "取出", "撤出")
DEVICE_KEYS = frozenset({"intubation", "drainage", "insert"})
# Resolution (积液已吸收): the findings before it in the clause are gone. Partial change (较前吸收,
# 部分吸收) is not resolution: the finding is still there.
RESOLUTION_CUES = tuple(
    adverb + passive + degree + verb
    for adverb in ("已", "已经") for passive in ("", "被") for degree in ("", "完全")
    for verb in ("吸收", "消退", "消散")) + ("完全吸收", "完全消退", "完全消散")
# Predicates that declare what precedes them normal.
NORMAL_VERDICTS = ("锐利", "居中", "清晰", "光整", "光滑", "正常", "自然", "规整", "通畅",
                   "对称", "良好", "完整", "清楚")
# Words that begin like a cue but describe an abnormality or a change over time; matching them
# first hides the cue. 无明显变化 says the finding is as before (still there), not that it is absent.
STABILITY_PHRASES = tuple(
    neg + degree + noun
    for neg in ("无", "未见", "没有", "未") for degree in ("", "明显", "显著")
    for noun in ("变化", "改变")) + ("无著变",)
PSEUDO_CUES = ("不均", "不规则", "不清", "不整", "不齐", "不全", "不连续") + tuple(
    p + v for v in NORMAL_VERDICTS for p in ("欠", "不", "未")) + STABILITY_PHRASES
CONTRAST_WORDS = ("但是", "但", "然而", "而")
# A clause that opens with one of these lists examples of the one before (没有急性病变的迹象，如
# 积液或气胸), so it does not start a new clause: the cue's scope runs on over the list.
EXEMPLIFIERS = ("例如", "比如", "诸如", "包括", "如")

# Surface forms the labeler reads as Table 1 keywords, beyond those of `keywords.KEYWORDS`.
EXTRA_TERMS = {
    # surgery named by its procedure or by what it leaves behind
    "postoperative": ("手术", "切开术", "切除术", "搭桥术", "置换术", "修补术", "手术夹", "金属夹",
                      "缝合", "缝合线", "缝线", "缝合钉", "吻合器"),
    "insert": ("心脏起搏器", "支架", "钢板", "螺钉", "内固定", "除颤器"),
    "intubation": ("导管", "置管", "胃管"),
    "shadow": ("不透明",),  # translated "opacity"; its 不 is no negation
    "blur": ("钝",),  # 稍钝, 略钝: a blunted angle
    "side_bend": ("侧凸",),
    "effusion": ("胸水",),
}
# Words that contain a term but name no finding: 影像 (imaging), 影响 (to affect), 鼻导管 (an oxygen
# cannula, not a tube in the airway), 锁骨下 (the region or vein below the clavicle, not the
# bone). They are read as nothing, and no cue is read inside them.
NOT_FINDINGS = ("影像", "影响", "鼻导管", "锁骨下")
# Lesion terms that spell their own organ (肺不张: 肺); located there wherever they stand.
ORGAN_IN_NAME = {"肺不张": "lung", "肺气肿": "lung"}
# Lesion terms that only imply their organ; used when the sentence names no site before them.
IMPLIED_ANATOMY = {"气胸": "chest", **ORGAN_IN_NAME}


def _labeler_lexicon() -> kw.Lexicon:
  table = dict(kw.TERM_TO_KEY)
  for key, terms in EXTRA_TERMS.items():
    kw.keyword(key)  # a KeyError names a misspelt key at import
    for term in terms:
      if term in table:
        raise AssertionError(f"labeler term {term!r} is already {table[term]!r}")
      table[term] = key
  for word in NOT_FINDINGS:
    table[word] = ""
  return kw.Lexicon.of(table)


LEXICON = _labeler_lexicon()


def find_terms(text: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
  """(terms, not_findings) of `text`: the (start, end, key) terms the labeler reads, as
  `keywords.find_terms` with the extra surface forms, and the (start, end) spans of
  NOT_FINDINGS words, which take part in the reading but label nothing."""
  found = kw.find_terms(text, LEXICON)
  return ([t for t in found if t[2]], [(s, e) for s, e, key in found if not key])
