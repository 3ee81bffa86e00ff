"""Graph-based report augmentation: the labeler reads the same labels, the graph reads the same,
places stay, it really rewrites when on, and off means off."""

import pickle
import re
import types

import numpy as np
import pytest

from cnx2rg_jax import config_checks
from cnx2rg_jax.data import dataset, pipeline, vocabulary
from cnx2rg_jax.data import graph_augment as ga
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import cleaning, report_graph
from configs import cnx2rg
from tfds_cncxr.synthetic import findings as findings_lib
from tfds_cncxr.synthetic.reports import write_report

SEEDS = range(4)


@pytest.fixture(scope="module")
def splits(tiny_synthetic):
  """{split: SplitTexts} of the tiny build, and the phrase bank of its train split."""
  _, prepared = tiny_synthetic
  texts = {s: dataset.read_split_texts(prepared, s) for s in dataset.SPLITS}
  return texts, ga.PhraseBank.from_split(texts["train"])


def _examples(texts):
  return [(r, *g) for split in texts.values() for r, g in zip(split.reports, split.graphs)]


def _labels(report):
  read = label_report(report)
  return read.keywords, read.pairs


def _graph_reading(entities, relations):
  labels, pairs = report_graph.read_graph(entities, relations)
  return labels.tolist(), pairs


def _place_words(text):
  return sorted(re.findall(r"\d+|[左右两上中下]", text.replace("双", "两")))


def _check_rewrites(examples, bank):
  """Augments every example once per seed (without the labeler check in `augment`, so the
  construction itself is tested) and asserts what must not change; returns the changed share."""
  changed = total = 0
  for seed in SEEDS:
    rng = np.random.default_rng(seed)
    for report, entities, relations in examples:
      text, new_entities, new_relations = ga.augment_graph(report, entities, relations, bank, rng,
                                                           check_labels=False)
      assert _labels(text) == _labels(report), (report, text)
      assert _graph_reading(new_entities, new_relations) == _graph_reading(entities, relations)
      # The re-emitted graph points at text that names its keywords.
      for e in new_entities:
        assert report_graph.span_keyword(text[e["start"]:e["end"]]) == e["keyword"], (text, e)
      assert _place_words(text) == _place_words(report), (report, text)
      assert cleaning.clean_report(text) == text
      changed += text != report
      total += 1
  return changed / total


def test_graphs_are_read_with_spans_into_the_cleaned_reports(splits):
  texts, _ = splits
  for report, entities, _ in _examples(texts):
    assert entities is not None
    for e in entities:
      assert report_graph.span_keyword(report[e["start"]:e["end"]]) == e["keyword"]


def test_rewrites_keep_labels_graph_and_places_and_change_most_reports(splits):
  texts, bank = splits
  assert bank.statements and bank.phrases
  # All 60 reports (the bank is the 42 train reports'), 4 rewrites each, probability 1.
  assert _check_rewrites(_examples(texts), bank) > 0.9


def test_rewrites_of_many_generated_reports():
  rng = np.random.default_rng(5)
  reports = [write_report(findings_lib.sample_findings(rng), rng) for _ in range(300)]
  examples = [(r.text, r.entities, r.relations) for r in reports]
  bank = ga.PhraseBank.from_graphs(examples[:200])
  assert _check_rewrites(examples, bank) > 0.9


def _hand_graph(text, statements):
  """(text, entities, relations): each statement (site, finding, label, keyword) is an anatomy
  and an observation located_at it, found in `text` in order."""
  entities, relations, at = [], [], 0
  for site, finding, label, keyword in statements:
    s = text.index(site, at)
    entities.append({"start": s, "end": s + len(site), "label": "Anatomy",
                     "keyword": report_graph.span_keyword(site)})
    f = at = text.index(finding, s + len(site))
    entities.append({"start": f, "end": f + len(finding), "label": label, "keyword": keyword})
    relations.append({"head": len(entities) - 1, "tail": len(entities) - 2, "label": "located_at"})
  return text, entities, relations


def _rewrites(example, bank, n=30):
  return {ga.augment(*example, bank, np.random.default_rng(s)) for s in range(n)}


def test_sides_stay_apart():
  # 左侧肋膈角锐利 and 两侧肋膈角锐利 read alike (costophrenic_angle negated) but say different
  # things; beside a right effusion only the first is true.
  effusion = _hand_graph("右侧胸腔积液，右侧肋膈角变钝，左侧肋膈角锐利。", [
      ("右侧胸腔", "积液", "DPO", "effusion"), ("右侧肋膈角", "变钝", "DPO", "blur"),
      ("左侧肋膈角", "锐利", "DNO", "")])
  normal = _hand_graph("两侧肋膈角锐利，心影不大。", [
      ("两侧肋膈角", "锐利", "DNO", ""), ("心影", "不大", "DNO", "")])
  bank = ga.PhraseBank.from_graphs([effusion, normal] * 2)
  outputs = _rewrites(effusion, bank)
  assert len(outputs) > 1  # the statements were reordered
  for text in outputs:
    assert "两侧" not in text and "左侧肋膈角锐利" in text


def test_positive_findings_are_moved_not_rephrased():
  # 少量积液 and 大量积液 have one graph reading (chest and effusion positive) but not one meaning.
  small = _hand_graph("右侧胸腔少量积液，心影不大。", [
      ("右侧胸腔", "少量积液", "DPO", "effusion"), ("心影", "不大", "DNO", "")])
  large = _hand_graph("右侧胸腔大量积液，心脏大小形态未见异常。", [
      ("右侧胸腔", "大量积液", "DPO", "effusion"), ("心脏", "大小形态未见异常", "DNO", "")])
  bank = ga.PhraseBank.from_graphs([small, large] * 2)
  outputs = _rewrites(small, bank)
  assert "心脏大小形态未见异常，右侧胸腔少量积液。" in outputs  # both rewrites happen
  assert all("少量积液" in text and "大量" not in text for text in outputs)


def test_statements_that_lean_on_the_one_before_stay_after_it():
  leaning = _hand_graph("心影不大，但主动脉结突出。", [
      ("心影", "不大", "DNO", ""), ("主动脉结", "突出", "DPO", "prominence")])
  bank = ga.PhraseBank.from_graphs([leaning] * 2)
  assert all(text.endswith("，但主动脉结突出。") for text in _rewrites(leaning, bank))


def test_reordering_alone_keeps_each_sentence_s_statements(splits):
  texts, _ = splits
  empty = ga.PhraseBank()
  rng = np.random.default_rng(0)
  changed = 0
  for report, entities, relations in _examples(texts):
    text = ga.augment(report, entities, relations, empty, rng)
    before, after = cleaning.split_sentences(report), cleaning.split_sentences(text)
    assert [sorted(re.split("[，；：。]", s)) for s in before] == [
        sorted(re.split("[，；：。]", s)) for s in after]
    changed += text != report
  assert changed > len(_examples(texts)) // 3


def test_rephrasing_makes_statements_no_report_has(splits):
  # Node-level swaps combine a statement's anatomy with another statement's DNO phrase
  # (所见骨质 + 未见异常), which the whole-statement bank alone never would.
  texts, bank = splits
  seen = {c for report, _, _ in _examples(texts) for c in re.split("[，；：。]", report)}
  rng = np.random.default_rng(0)
  new = {c for report, entities, relations in _examples(texts)
         for c in re.split("[，；：。]", ga.augment(report, entities, relations, bank, rng))}
  assert new - seen


def test_off_means_off(splits):
  texts, bank = splits
  for report, entities, relations in _examples(texts):
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert ga.augment(report, entities, relations, bank, rng, probability=0.0) == report
    assert ga.augment(report, None, None, bank, rng) == report  # a record without a graph
    assert rng.bit_generator.state == state
  # Probability p rewrites about a share p of the reports.
  rng = np.random.default_rng(0)
  examples = _examples(texts) * 5
  share = np.mean([ga.augment(*x, bank, rng, probability=0.5) != x[0] for x in examples])
  assert 0.3 < share < 0.7


def test_same_seed_same_rewrites(splits):
  texts, bank = splits

  def run(seed, bank=bank):
    rng = np.random.default_rng(seed)
    return [ga.augment(*x, bank, rng) for x in _examples(texts)]

  assert run(3) == run(3)
  assert run(3) != run(4)
  assert run(3, pickle.loads(pickle.dumps(bank))) == run(3)  # what grain workers get


def test_align_graph_follows_cleaning():
  raw = "1. 两肺纹理清晰,心影不大.\n2.双侧膈面光整"
  spans = ["两肺", "纹理清晰", "心影", "不大", "双侧膈面", "光整"]
  entities = [{"start": raw.index(s), "end": raw.index(s) + len(s), "label": "Anatomy",
               "keyword": ""} for s in spans]
  cleaned = cleaning.clean_report(raw)
  assert cleaned == "两肺纹理清晰，心影不大。双侧膈面光整。"
  aligned, _ = ga.align_graph(raw, cleaned, entities, [])
  assert [cleaned[e["start"]:e["end"]] for e in aligned] == spans
  # A span that cleaning cuts (the list number goes) cannot be moved.
  broken = [{"start": 0, "end": 5, "label": "Anatomy", "keyword": ""}]
  assert ga.align_graph(raw, cleaned, broken, []) is None


def test_pipeline_rewrites_training_targets_only_when_on(tiny_synthetic, splits):
  config, prepared = tiny_synthetic
  texts, _ = splits
  tok = vocabulary.tokenizer_for_run(config.text, prepared, None, texts["train"])

  def batches(enabled, probability):
    data = config.data.copy_and_resolve_references()
    data.graph_augment.enabled, data.graph_augment.probability = enabled, probability
    ds = pipeline.train_dataset(prepared, data, tok, batch_size=8, seed=0,
                                shard=pipeline.ProcessShard(0, 1), split_texts=texts["train"])
    it = iter(ds)
    return [next(it) for _ in range(4)]

  off, zero, on = batches(False, 0.5), batches(True, 0.0), batches(True, 1.0)
  changed = 0
  for b_off, b_zero, b_on in zip(off, zero, on):
    for key in b_off:
      np.testing.assert_array_equal(b_off[key], b_zero[key])  # probability 0 is off
    np.testing.assert_array_equal(b_off["image"], b_on["image"])
    for tokens, reference in zip(b_on["report_tokens"], b_on["report"]):
      target = tok.decode(tokens)
      assert _labels(target) == _labels(reference)
      changed += target != reference
  assert changed > 0.8 * sum(len(b["report"]) for b in on)
  # The transform with its bank pickles, for grain's worker processes.
  transform = pipeline.make_transform(config.data, tok, prepared.report_cleaner,
                                      pipeline.phrase_bank(_enabled(config.data), prepared,
                                                           texts["train"]))
  assert pickle.loads(pickle.dumps(transform)).phrase_bank == transform.phrase_bank


def _enabled(data):
  data = data.copy_and_resolve_references()
  data.graph_augment.enabled = True
  return data


def test_pipeline_refuses_a_build_without_graphs(splits):
  texts, _ = splits
  config = cnx2rg.get_config()
  no_graphs = dataset.SplitTexts(texts["train"].ids, texts["train"].reports,
                                 texts["train"].keyword_labels, texts["train"].has_keyword_labels,
                                 [None] * len(texts["train"].reports))
  chinese = types.SimpleNamespace(report_cleaner="zh", language="zh")
  assert pipeline.phrase_bank(config.data, chinese, no_graphs) is None  # off: nothing needed
  with pytest.raises(dataset.DataConfigError, match="graph_augment"):
    pipeline.phrase_bank(_enabled(config.data), chinese, no_graphs)
  english = types.SimpleNamespace(report_cleaner="mimic_cxr", language="en")
  with pytest.raises(dataset.DataConfigError, match="graph_augment"):
    pipeline.phrase_bank(_enabled(config.data), english, texts["train"])


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_probability_outside_0_1_is_a_config_error(probability):
  config = cnx2rg.get_config()
  config.data.graph_augment.probability = probability
  with pytest.raises(config_checks.ConfigError, match="data.graph_augment.probability"):
    config_checks.check(config)
