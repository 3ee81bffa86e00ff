"""The paper's argument, as a test: BLEU barely sees a negation that flips the clinical score."""

from cnx2rg_jax.evaluation import clinical, nlg


def test_swapping_weijian_for_jian_flips_clinical_but_not_bleu():
  reference = "两肺纹理清晰。心影不大。右侧胸腔积液，右侧肋膈角变钝。纵隔居中。"
  negated = "两肺纹理清晰。心影不大。右侧胸腔未见积液，右侧肋膈角锐利。纵隔居中。"
  hedged = reference.replace("右侧胸腔积液", "右侧胸腔未见积液")
  same = clinical.score_reports([reference], [reference])
  flipped = clinical.score_reports([hedged], [reference])
  assert same["clinical_f1"] == 1.0
  assert flipped["clinical_recall"] < 0.6  # the effusion pair is lost
  bleu_same = nlg.nlg_scores({0: reference}, {0: reference}, meteor=False)["bleu_4"]
  bleu_flipped = nlg.nlg_scores({0: hedged}, {0: reference}, meteor=False)["bleu_4"]
  # Two characters changed: BLEU-4 stays above 0.7 (0.73 here; jieba splits 胸腔积液 once 未见 sits
  # inside it), while the clinical recall halves.
  assert bleu_same > 0.999 and bleu_flipped > 0.7
  # A fully negated report shares most tokens too, yet scores no clinical true positive.
  assert clinical.score_reports([negated], [reference])["tp"] == 0
