"""The paper's configuration on a plain release folder (reports and images only, as CN-CXR, IU
X-Ray and MIMIC-CXR come): labels and graphs made at build time, given ones winning, the
metadata's counts, the keyword loss on labelled reports only, the config errors, Table 1."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

import numpy as np
import pytest

from cnx2rg_jax import config_checks, run
from cnx2rg_jax.data import dataset, graph_augment, pipeline, transforms, vocabulary
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text.labeler_graph import graph_of
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.training import loop
from configs import cnx2rg
from tfds_cncxr import annotate
from tests.conftest import tiny_model_config

# Given labels that no report states, so that "given wins" cannot pass by coincidence.
GIVEN_LABELS = {"effusion": 1, "fracture": 1, "heart": -1}


def _labeler_labels(report: str) -> np.ndarray:
  out = np.full((kw.NUM_KEYWORDS,), kw.NOT_MENTIONED, np.int8)
  for key, value in label_report(report).keywords.items():
    out[kw.KEYWORD_INDEX[key]] = value
  return out


def _write_release(root: pathlib.Path, prepared, given: bool) -> dict:
  """A release folder of the synthetic build's studies, keeping only id, report and image (and,
  with `given`, keyword labels on two training entries and a graph on a third)."""
  (root / "images").mkdir(parents=True)
  ann = {}
  for split in dataset.SPLITS:
    source = prepared.source(split)
    entries = []
    for i in range(len(source)):
      r = source[i]
      rid = r["id"].decode() if isinstance(r["id"], bytes) else str(r["id"])
      (root / "images" / f"{rid}.png").write_bytes(r["image"])
      report = r["report"].decode() if isinstance(r["report"], bytes) else str(r["report"])
      entry = {"id": rid, "report": report, "image_path": [f"{rid}.png"]}
      if given and split == "train" and i < 2:
        entry["keywords"] = GIVEN_LABELS
      if given and split == "train" and i == 2:
        ents, rels = graph_augment.record_graph(r, report)
        entry["entities"] = [{"start": e["start"], "end": e["end"], "label": e["label"]}
                             for e in ents]
        entry["relations"] = rels
      entries.append(entry)
    ann[split] = entries
  (root / "annotation.json").write_text(json.dumps(ann, ensure_ascii=False), encoding="utf-8")
  return ann


def _paper_config(data_dir: str, manual_dir: pathlib.Path, **data):
  """configs/cnx2rg.py:paper at the tests' tiny dims, every paper addition on."""
  tiny = tiny_model_config(data_dir)
  c = cnx2rg.get_config("paper")
  for section in ("model", "decode"):
    for key, value in tiny[section].items():
      if key not in ("num_prompts", "prompt_feature_dim"):
        c[section][key] = value
  d = c.data
  d.data_dir, d.manual_dir, d.num_shards, d.build_workers, d.num_workers = (
      data_dir, str(manual_dir), 2, 0, 0)
  d.image_size, d.crop_size, d.max_tokens = tiny.data.image_size, tiny.data.crop_size, 24
  # Oversampling with thresholds that make the tiny train split oversample its rare keywords.
  d.oversample.min_count, d.oversample.max_rate, d.oversample.max_samples = 10, 2, 10
  for key, value in data.items():
    d[key] = value
  c.text.min_count = 1
  c.train.batch_size, c.train.num_steps, c.train.log_every = 4, 2, 1
  c.train.eval_every = c.train.checkpoint_every = 0
  c.eval.batch_size, c.eval.meteor, c.eval.baselines = 8, False, False
  c.card.enabled = False
  return c


@pytest.fixture(scope="module")
def release(tiny_synthetic, tmp_path_factory):
  """(annotation dict, labelled release folder, unlabelled release folder, TFDS data_dir)."""
  _, prepared = tiny_synthetic
  base = tmp_path_factory.mktemp("plain_release")
  ann = _write_release(base / "given", prepared, given=True)
  _write_release(base / "plain", prepared, given=False)
  return ann, base / "given", base / "plain", str(base / "tfds")


def _records(prepared, split):
  source = prepared.source(split)
  return [source[i] for i in range(len(source))]


def _text(v):
  return v.decode() if isinstance(v, bytes) else str(v)


def test_made_labels_and_graphs_given_ones_win_and_counts(release):
  ann, given_dir, _, data_dir = release
  c = _paper_config(data_dir, given_dir)
  prepared = dataset.prepare(c.data)
  # the labeler (zh's default), images stored at the training resize
  assert prepared.builder.builder_config.name == f"release_px{c.data.image_size}"
  meta = prepared.builder.info.metadata["annotation"]
  assert meta["annotator"] == "labeler"
  for split in dataset.SPLITS:
    raw = {e["id"]: e for e in ann[split]}
    n_given_labels = sum("keywords" in e for e in raw.values())
    n_given_graphs = sum("entities" in e for e in raw.values())
    assert meta["splits"][split] == {
        "labels_given": n_given_labels, "labels_made": len(raw) - n_given_labels,
        "labels_none": 0, "graphs_given": n_given_graphs,
        "graphs_made": len(raw) - n_given_graphs, "graphs_none": 0}, split
    for r in _records(prepared, split):
      entry = raw[_text(r["id"])]
      assert bool(r["has_keyword_labels"])
      if "keywords" in entry:  # given labels win
        want = np.full((kw.NUM_KEYWORDS,), kw.NOT_MENTIONED, np.int8)
        for key, value in GIVEN_LABELS.items():
          want[kw.KEYWORD_INDEX[key]] = value
      else:
        want = _labeler_labels(entry["report"])
      np.testing.assert_array_equal(r["keyword_labels"], want)
      cleaned = _text(r["report"])
      ents, rels = graph_augment.record_graph(r, transforms.REPORT_CLEANERS["zh"](cleaned))
      if "entities" in entry:  # the given graph, untouched
        assert [(e["start"], e["end"], e["label"]) for e in ents] == [
            (e["start"], e["end"], e["label"]) for e in entry["entities"]]
        continue
      # The made graph reads back as the labeler's positive/negated labels and its pairs.
      read = label_report(entry["report"])
      labels, pairs = report_graph.read_graph(ents, rels)
      sure = {k: v for k, v in read.keywords.items() if v != kw.UNCERTAIN}
      assert {kw.KEYWORD_KEYS[i]: int(v) for i, v in enumerate(labels)
              if v != kw.NOT_MENTIONED} == sure
      assert pairs == read.pairs


def test_keyword_targets_are_the_labels_of_the_reports_trained_on(release):
  ann, given_dir, _, data_dir = release
  c = _paper_config(data_dir, given_dir)
  prepared = dataset.prepare(c.data)
  texts = dataset.read_split_texts(prepared, "train")
  tok = vocabulary.tokenizer_for_run(c.text, prepared, str(pathlib.Path(data_dir) / "run0"),
                                     texts)
  raw = {e["id"]: e for e in ann["train"]}
  ds = pipeline.train_dataset(prepared, c.data, tok, batch_size=4, seed=0,
                              shard=pipeline.ProcessShard(0, 1), split_texts=texts, num_epochs=1)
  seen = 0
  for batch in ds:
    for i, rid in enumerate(batch["id"]):
      entry = raw[_text(rid)]
      want = (_labeler_labels(entry["report"]) if "keywords" not in entry else None)
      if want is not None:
        np.testing.assert_array_equal(batch["keyword_labels"][i], want)
      assert bool(batch["has_keyword_labels"][i])
      seen += 1
  # Oversampling is on: the epoch is longer than the split.
  assert seen > len(raw) - 4


def test_paper_config_trains_and_evaluates_on_a_plain_release(release, tmp_path):
  _, _, plain_dir, data_dir = release
  c = _paper_config(data_dir, plain_dir)
  assert c.data.oversample.enabled and c.data.sentence_shuffle and c.data.graph_augment.enabled
  assert c.train.keyword_weight > 0
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    code = run.main(c, workdir=str(tmp_path / "run"), mode="train", split="test", images=[],
                    output="")
  assert code == 0, out.getvalue()
  metrics = json.loads((tmp_path / "run/eval/test_metrics.json").read_text())
  assert metrics["num_reports"] == len(json.loads(
      (plain_dir / "annotation.json").read_text())["test"])
  # The keyword head is scored against the made labels (every test report has some).
  auroc = json.loads((tmp_path / "run/eval/test_keyword_auroc.json").read_text())
  assert auroc and np.isfinite(auroc["macro_auroc"])


def test_unlabelled_build_refuses_what_needs_labels(release, tmp_path):
  _, _, plain_dir, data_dir = release
  c = _paper_config(data_dir, plain_dir, annotate="none")
  prepared = dataset.prepare(c.data)
  # never the labeler's build
  assert prepared.builder.builder_config.name == f"release_annotnone_px{c.data.image_size}"
  texts = dataset.read_split_texts(prepared, "train")
  assert not texts.has_keyword_labels.any()
  meta = prepared.builder.info.metadata["annotation"]["splits"]["train"]
  assert meta["labels_none"] == meta["graphs_none"] == len(texts.ids)
  with pytest.raises(dataset.DataConfigError, match="data.annotate='none'"):
    pipeline.epoch_indices(c.data, texts, 0)
  with pytest.raises(dataset.DataConfigError, match="data.annotate='none'"):
    pipeline.phrase_bank(c.data, prepared, texts)
  c.data.oversample.enabled = c.data.graph_augment.enabled = False
  with pytest.raises(config_checks.ConfigError, match="data.annotate='none'"):
    loop.train(c, str(tmp_path / "run"), log=lambda _: None)
  # Through the CLI: one paragraph and exit 2, no traceback.
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    code = run.main(c, workdir=str(tmp_path / "cli"), mode="train", split="test", images=[],
                    output="")
  assert code == 2 and err.getvalue().startswith("error: ") and "data.annotate" in err.getvalue()
  assert "Traceback" not in err.getvalue()


def test_english_is_never_labelled_with_the_chinese_lexicon(tmp_path):
  c = cnx2rg.get_config("paper")
  c.data.language = "en"
  assert dataset.annotator_name(c.data) == "none"  # auto
  for name in ("labeler", "cn_radgraph"):
    c.data.annotate = name
    with pytest.raises(config_checks.ConfigError, match="read Chinese only"):
      config_checks.check(c)
    with pytest.raises(dataset.DataConfigError, match="read Chinese"):
      dataset.annotator_name(c.data)


def test_cn_radgraph_annotator_is_its_own_build(release, tmp_path):
  ann, given_dir, _, data_dir = release
  model = tmp_path / "cnrg"
  (model / annotate.CN_RADGRAPH_MODEL_DIR).mkdir(parents=True)
  (model / annotate.CN_RADGRAPH_MODEL_DIR / "cn_radgraph.json").write_text("{}")
  fingerprint = annotate.model_fingerprint(str(model))
  calls = []

  def make(folder):  # an extractor that reads what the labeler reads
    calls.append(folder)
    return annotate.GraphAnnotator(
        lambda texts: [graph_of(label_report(t)) for t in texts], fingerprint)

  c = _paper_config(data_dir, given_dir, annotate="cn_radgraph", cn_radgraph_dir=str(model))
  prepared = dataset.prepare(c.data, make_annotator=make)
  name = prepared.builder.builder_config.name
  assert name == f"release_annotcnradgraph{fingerprint[:12]}_px40" and calls == [str(model)]
  raw = {e["id"]: e for e in ann["val"]}
  for r in _records(prepared, "val"):
    read = label_report(raw[_text(r["id"])]["report"])
    sure = {k: v for k, v in read.keywords.items() if v != kw.UNCERTAIN}
    got = {kw.KEYWORD_KEYS[i]: int(v) for i, v in enumerate(r["keyword_labels"])
           if v != kw.NOT_MENTIONED}
    assert got == sure  # labels read off the extractor's graph: no uncertain ones
  # Another model is another build, and the one above is reused, not rebuilt.
  (model / annotate.CN_RADGRAPH_MODEL_DIR / "cn_radgraph.json").write_text('{"other": 1}')
  assert dataset.builder_config(c.data).name != name
  with pytest.raises(dataset.DataConfigError, match="cn_radgraph_dir"):
    c.data.cn_radgraph_dir = str(tmp_path / "empty")
    dataset.builder_config(c.data)


def test_table1_counts_match_a_brute_force_count(release, capsys):
  ann, given_dir, _, data_dir = release
  c = _paper_config(data_dir, given_dir)
  assert run.main(c, workdir="unused", mode="table1", split="test", images=[], output="",
                  as_json=True) == 0
  got = json.loads(capsys.readouterr().out)
  for split in dataset.SPLITS:
    want = np.zeros(kw.NUM_KEYWORDS, int)
    for e in ann[split]:
      if "keywords" in e:
        for key, value in e["keywords"].items():
          want[kw.KEYWORD_INDEX[key]] += value == 1
      else:
        want += _labeler_labels(e["report"]) == kw.POSITIVE
    assert [got["counts"][k][split] for k in kw.KEYWORD_KEYS] == want.tolist(), split
    assert got["reports"][split] == len(ann[split]) and got["unlabelled"][split] == 0
  assert run.main(c, workdir="unused", mode="table1", split="test", images=[], output="") == 0
  table = capsys.readouterr().out.splitlines()
  lung = next(line for line in table if line.startswith("Lung "))
  assert [int(x) for x in lung.split("|")[0].split()[1:]] == [
      got["counts"]["lung"][s] for s in dataset.SPLITS]


@pytest.mark.parametrize("raw", [
    "1. 两肺纹理增强, 右下肺野见斑片状影 。\n2.心影不大;双侧肋膈角锐利",
    "  右侧胸腔积液， 未见气胸。  左侧第5肋骨骨折?",
])
def test_made_graph_spans_index_the_report_as_written(raw):
  cleaned = transforms.REPORT_CLEANERS["zh"](raw)
  assert cleaned != raw
  (made,) = annotate.RuleAnnotator().annotate([raw])
  entities, relations = made.graph
  want_entities, want_relations = graph_of(label_report(raw))
  assert len(entities) == len(want_entities) > 0 and relations == want_relations
  for e, w in zip(entities, want_entities):
    # the span covers the same characters, whitespace the cleaning dropped aside
    assert "".join(raw[e["start"]:e["end"]].split()) == cleaned[w["start"]:w["end"]]
  back, _ = graph_augment.align_graph(raw, cleaned, entities, relations)
  assert [(e["start"], e["end"]) for e in back] == [(w["start"], w["end"]) for w in want_entities]
