"""The labeler's rules for real-world phrasing (issue 22), each shown on a short sentence.

Every cue and every extra surface form of `labeler_lexicon` is exercised here: the tables below
must name them all, so a new entry needs its sentence. Expected labels are written by hand.
"""

import pytest

from cnx2rg_jax.text import labeler_lexicon as lex
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw


def _labels(report):
  return label_report(report).keywords


def _check(report, expected):
  got = _labels(report)
  for key, value in expected.items():
    assert got.get(key) == value, (report, key, got)


# --- negation whose scope runs over a later list -------------------------------------------------

@pytest.mark.parametrize("report, expected", [
    ("没有急性病变的迹象，如胸腔积液、气胸或肺不张。",
     {"effusion": 0, "gas": 0, "atelectasis": 0, "chest": 0}),
    ("没有证据表明有肺炎，例如积液或肺不张。", {"effusion": 0, "atelectasis": 0}),
    ("没有残留气胸的迹象，比如胸膜线或无肺纹理区。", {"gas": 0, "pleura": 0, "no_lung_texture": 0}),
    ("未见急性异常，诸如气胸。", {"gas": 0}),
    ("未见急性异常，包括骨折。", {"fracture": 0}),
    ("未见气胸及胸腔积液。", {"gas": 0, "effusion": 0}),
    # without an example word the next clause is a statement of its own
    ("没有气胸，右侧胸腔积液。", {"gas": 0, "effusion": 1}),
])
def test_negation_runs_over_a_list_of_examples(report, expected):
  _check(report, expected)


def test_every_example_word_is_tested():
  assert set(lex.EXEMPLIFIERS) == {"如", "例如", "比如", "诸如", "包括"}


# --- removed devices and resolved findings -------------------------------------------------------

@pytest.mark.parametrize("cue", lex.REMOVAL_CUES)
def test_removal_negates_the_devices_of_its_clause(cue):
  _check(f"右侧胸腔引流管已{cue}。", {"drainage": 0, "chest": 0})
  _check(f"气管插管已被{cue}。", {"intubation": 0, "trachea": 0})
  # before the device too; a finding in the same clause is not a device and stays
  _check(f"{cue}引流管后右侧少量气胸。", {"drainage": 0, "gas": 1})


def test_a_device_still_in_place_wins_over_one_removed():
  _check("气管插管已拔除。胃管仍在位。", {"intubation": 1, "trachea": 0})


@pytest.mark.parametrize("cue", lex.RESOLUTION_CUES)
def test_resolution_negates_what_precedes_it(cue):
  _check(f"右侧胸腔积液{cue}。", {"effusion": 0, "chest": 0})


@pytest.mark.parametrize("report", ["右侧胸腔积液较前吸收。", "右下肺斑片影较前部分吸收。",
                                    "右侧气胸较前减少。"])
def test_partial_change_leaves_the_finding_present(report):
  assert 1 in _labels(report).values(), report


# --- stable and unchanged findings ---------------------------------------------------------------

@pytest.mark.parametrize("phrase", lex.STABILITY_PHRASES)
def test_no_change_is_not_a_denial(phrase):
  _check(f"右侧胸腔积液，较前{phrase}。", {"effusion": 1})
  _check(f"右侧胸腔积液{phrase}。", {"effusion": 1, "chest": 1})
  assert "heart" not in _labels(f"心影大小{phrase}。")  # unchanged is not normal


@pytest.mark.parametrize("report", ["右下肺斑片影较前相仿。", "双肺纹理增多，稳定。",
                                    "右侧胸腔积液同前。"])
def test_stable_findings_are_present(report):
  assert set(_labels(report).values()) == {1}, (report, _labels(report))


# --- hedges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cue", lex.ALTERNATIVE_CUES)
def test_alternatives_are_uncertain(cue):
  _check(f"左下肺不张{cue}实变。", {"atelectasis": -1, "lung": -1})
  _check(f"左侧胸腔少量积液{cue}胸膜增厚。", {"effusion": -1, "chest": -1})
  _check(f"右下肺斑片影，肺不张{cue}积液。", {"atelectasis": -1, "effusion": -1, "shadow": 1})
  # a denial of alternatives stays a denial
  _check(f"没有胸腔积液{cue}气胸。", {"effusion": 0, "gas": 0})


def test_alternatives_cover_a_list_but_not_a_finding_then_explained():
  _check("可见骨折、积液或肺不张。", {"fracture": -1, "effusion": -1, "atelectasis": -1})
  _check("左肺底部的线状不透明影最可能是盘状肺不张或瘢痕。",
         {"shadow": 1, "lung": 1, "atelectasis": -1})


NEW_HEDGES = ("不能完全排除", "不能完全除外", "无法排除", "无法除外", "难以排除", "难以除外",
              "未能排除", "未能除外", "有无", "是否", "或许", "也许")


@pytest.mark.parametrize("cue", NEW_HEDGES)
def test_hedged_denials_and_questions_are_uncertain(cue):
  assert cue in lex.UNCERTAINTY_CUES
  _check(f"{cue}右侧第5肋骨骨折。", {"fracture": -1, "rib": -1})


@pytest.mark.parametrize("report, expected", [
    ("左侧少量胸腔积液可能。", {"effusion": -1}),
    ("右侧肋骨骨折待排。", {"fracture": -1}),
    ("不除外少量气胸。", {"gas": -1}),
    ("考虑左下肺不张。", {"atelectasis": -1}),
    ("左侧第9肋骨骨折不能完全排除。", {"fracture": -1}),
])
def test_known_hedges_still_hedge(report, expected):
  _check(report, expected)


# --- normal verdicts, words that are no cue, no-finding words ------------------------------------

@pytest.mark.parametrize("verdict, report, expected", [
    ("对称", "胸廓对称。", {"chest": 0}),
    ("良好", "左肺复张良好。", {"lung": 0}),
    ("完整", "骨质结构完整。", {"bone": 0}),
    ("清楚", "双肺清楚。", {"lung": 0}),
])
def test_new_normal_verdicts(verdict, report, expected):
  assert verdict in lex.NORMAL_VERDICTS
  _check(report, expected)
  # with 不 in front the verdict is an abnormal description, which labels nothing here
  assert _labels(report.replace(verdict, "不" + verdict)) == {}


def test_a_verdict_after_a_device_is_about_its_position():
  _check("气管插管位置良好。", {"intubation": 1, "trachea": 1})


def test_discontinuous_is_not_a_negation():
  assert _labels("右侧第5肋骨皮质不连续，骨折。")["fracture"] == 1


def test_colloquial_negation():
  _check("心脏和肺都没看到异常。", {"heart": 0, "lung": 0})
  _check("没看到积液。", {"effusion": 0})


@pytest.mark.parametrize("word, report", [
    ("影像", "影像表现：右侧胸腔积液。"),
    ("影响", "胸椎侧弯，不影响心肺。"),
    ("鼻导管", "改鼻导管吸氧。"),
    ("锁骨下", "右锁骨下静脉置管在位。"),
])
def test_words_that_name_no_finding(word, report):
  read = label_report(report)
  start = read.text.index(word)
  inside = [m for m in read.mentions if m.start < start + len(word) and m.end > start]
  assert inside == [], (word, inside)
  assert set(lex.NOT_FINDINGS) == {"影像", "影响", "鼻导管", "锁骨下"}


def test_not_findings_hide_their_cues():
  assert _labels("不影响心肺。")["lung"] == 0  # the 不 before 影响 still negates
  assert "shadow" not in _labels("不影响心肺。")


def test_a_bare_shadow_after_its_anatomy_is_that_anatomys_image():
  _check("双侧肺门影不大。", {"hilum": 0, "shadow": 0})
  _check("双肺门影增浓。", {"hilum": 1, "shadow": 1})
  _check("右下肺野片状影，边缘清晰。", {"shadow": 1})  # a finding noun keeps its status


# --- attachment ----------------------------------------------------------------------------------

def test_lesions_that_spell_their_organ_belong_to_it():
  assert label_report("左侧大量胸腔积液伴左下肺不张。").pairs == [
      ("chest", "effusion"), ("lung", "atelectasis")]
  assert label_report("右侧胸腔积液伴肺气肿。").pairs == [
      ("chest", "effusion"), ("lung", "emphysema")]


def test_a_later_site_in_the_sentence_belongs_to_later_findings():
  assert label_report("术后第一天：左侧胸腔少量积液。").pairs == [("chest", "effusion")]
  # an earlier one is still found (其内无肺纹理)
  assert ("chest", "no_lung_texture") in label_report("右侧胸腔透亮度增高，其内无肺纹理。").pairs


# --- surface forms the labeler reads beyond Table 1 ----------------------------------------------

TERM_SENTENCES = {
    "手术": ("患者以前做过心脏手术。", [("heart", "postoperative")]),
    "切开术": ("可见胸骨正中切开术钢丝。", [("chest", "postoperative")]),
    "切除术": ("左肺上叶切除术后。", [("lung", "postoperative")]),
    "搭桥术": ("既往冠状动脉搭桥术。", []),
    "置换术": ("主动脉瓣置换术后。", [("aorta", "postoperative")]),
    "修补术": ("膈肌修补术后。", [("diaphragm", "postoperative")]),
    "手术夹": ("纵隔内可见手术夹。", [("mediastinum", "postoperative")]),
    "金属夹": ("右肺门见金属夹。", [("hilum", "postoperative")]),
    "缝合": ("胸骨见钢丝缝合。", [("chest", "postoperative")]),
    "缝合线": ("右上肺见缝合线。", [("lung", "postoperative")]),
    "缝线": ("右上肺见缝线影。", [("lung", "postoperative"), ("lung", "shadow")]),
    "缝合钉": ("右侧胸壁见手术缝合钉。", [("chest", "postoperative")]),
    "吻合器": ("右肺门区见吻合器。", [("hilum", "postoperative")]),
    "心脏起搏器": ("心脏起搏器位于左侧胸壁。", [("chest", "insert")]),
    "支架": ("心脏支架植入后。", [("heart", "insert")]),
    "钢板": ("锁骨见钢板。", [("bone", "insert")]),
    "螺钉": ("胸椎见螺钉。", [("vertebrae", "insert")]),
    "内固定": ("胸椎内固定术后。", [("vertebrae", "insert"), ("vertebrae", "postoperative")]),
    "除颤器": ("左上胸壁见除颤器。", [("chest", "insert")]),
    "导管": ("气管内导管尖端位于隆突上方。", [("trachea", "intubation")]),
    "置管": ("右颈内静脉置管在位。", []),
    "胃管": ("胃管在位。", []),
    "不透明": ("左下肺不透明。", [("lung", "shadow")]),
    "钝": ("右侧肋膈角稍钝。", [("costophrenic_angle", "blur")]),
    "侧凸": ("脊柱侧凸。", [("vertebrae", "side_bend")]),
    "胸水": ("右侧胸腔少量胸水。", [("chest", "effusion")]),
}


def test_every_extra_term_has_its_sentence():
  assert set(TERM_SENTENCES) == {t for terms in lex.EXTRA_TERMS.values() for t in terms}


@pytest.mark.parametrize("term", sorted(TERM_SENTENCES))
def test_extra_term(term):
  report, pairs = TERM_SENTENCES[term]
  key = lex.LEXICON.term_to_key[term]
  read = label_report(report)
  assert (term, key) in {(read.text[m.start:m.end], m.key) for m in read.mentions}, read.mentions
  assert read.keywords[key] == kw.POSITIVE
  assert read.pairs == sorted(pairs), (report, read.pairs)


def test_extra_terms_leave_table1_alone():
  # the shared lexicon (synthetic writer, jieba dictionary, keyword head) does not see them
  extra = {t for terms in lex.EXTRA_TERMS.values() for t in terms} | set(lex.NOT_FINDINGS)
  assert extra.isdisjoint(kw.TERM_TO_KEY)
  assert kw.find_terms("胸骨正中切开术后") == [(0, 2, "chest"), (6, 8, "postoperative")]
  assert lex.find_terms("胸骨正中切开术后") == ([(0, 2, "chest"), (4, 7, "postoperative")], [])
