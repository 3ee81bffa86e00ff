"""Tests of the optional pkuseg segmenter, on a tiny spacy-pkuseg model trained here in seconds.

The model learns from reports that jieba segmented; pkuseg's own `cut` on the same model is the
reference our segmenter must reproduce.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import types

import pytest

spacy_pkuseg = pytest.importorskip("spacy_pkuseg")

# pylint: disable=wrong-import-position
from cnx2rg_jax import config_checks
from cnx2rg_jax.data import vocabulary
from cnx2rg_jax.text import pkuseg_segmenter, segmentation
from cnx2rg_jax.text import tokenizer as tok
from cnx2rg_jax.text.cleaning import clean_report
from cnx2rg_jax.text.word_vocab import WordTokenizer
from configs import cnx2rg
from tests.test_text import CORPUS

TRAIN_REPORTS = CORPUS  # tests/test_text.py's realistic reports
# Reports the model never saw: unknown runs (右上肺见, 可见钙化) are where segmenters differ.
HELD_OUT = [
    "两肺纹理增强，右上肺见结节影，考虑炎性病变。心影增大。",
    "主动脉弓迂曲，可见钙化灶。左侧胸膜增厚。",
    "右侧少量气胸，右肺压缩约20%。纵隔居中。",
    "双侧肺野透亮度减低，两肺门影增浓。心胸比约0.55。",
]
TEXTS = TRAIN_REPORTS + HELD_OUT


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A spacy-pkuseg model trained on jieba's segmentation of TRAIN_REPORTS (about a second)."""
  root = tmp_path_factory.mktemp("pkuseg")
  lines = [" ".join(segmentation.segment(clean_report(r))) for r in TRAIN_REPORTS]
  train_file = root / "train.txt"
  train_file.write_text("\n".join(lines * 2) + "\n", encoding="utf-8")
  model = root / "model"
  spacy_pkuseg.train(str(train_file), str(train_file), str(model), train_iter=3)
  return str(model)


@pytest.fixture(scope="module")
def reference(model_dir):
  """spacy-pkuseg itself on the model, with our user dictionary."""
  return spacy_pkuseg.pkuseg(model_name=model_dir, user_dict=list(segmentation.user_terms()))


def _copy(model_dir: str, dst) -> str:
  shutil.copytree(model_dir, dst)
  return str(dst)


# --- segmentation -----------------------------------------------------------------------------

def test_segment_matches_pkuseg(model_dir, reference):
  for text in TEXTS:
    assert pkuseg_segmenter.segment(text, model_dir) == reference.cut(text), text
  # It is pkuseg's model that cuts, not jieba: they part somewhere on unseen text.
  assert any(pkuseg_segmenter.segment(t, model_dir) != segmentation.segment(t) for t in HELD_OUT)


def test_join_invariant_and_whitespace(model_dir, reference):
  for text in TEXTS + [" 两肺纹理\t增强\n\n心影\u3000不大 ", "", "  ", "a b。"]:
    words = pkuseg_segmenter.segment(text, model_dir)
    assert "".join(words) == text and all(words), repr(text)
    # pkuseg drops whitespace; we keep each run as a token and cut the rest as it does
    assert [w for w in words if not w.isspace()] == reference.cut(text), repr(text)
  assert pkuseg_segmenter.segment("两肺 纹理", model_dir)[-2:] == [" ", "纹理"]
  with pytest.raises(ValueError, match="str"):
    pkuseg_segmenter.segment(b"\xe5\xbf\x83", model_dir)


def test_user_terms_stay_whole(model_dir):
  terms = segmentation.user_terms()
  assert [t for t in terms if pkuseg_segmenter.segment(t, model_dir) != [t]] == []
  for text, term in [("右下肺野见片状密度增高影。", "片状密度增高影"), ("主动脉弓迂曲。", "主动脉弓"),
                     ("右侧少量液气胸。", "液气胸"), ("心胸比约0.55。", "心胸比")]:
    assert term in pkuseg_segmenter.segment(text, model_dir), text
  # Without the user dictionary the tiny model splits many of them: the dictionary does the work.
  bare = spacy_pkuseg.pkuseg(model_name=model_dir, user_dict=None)
  assert sum(bare.cut(t) != [t] for t in terms) >= 10


def test_domain_dictionary_as_for_a_named_model(model_dir, tmp_path, monkeypatch):
  """A NAME_dict.pkl beside the model is used as pkuseg uses it for its 'medicine' model."""
  home = tmp_path / "home"
  model = _copy(model_dir, home / "medicine")
  words = ["置入术后", "右上肺见", "可见钙化灶", "压缩约20%"]
  with open(os.path.join(model, "medicine_dict.pkl"), "wb") as f:
    pickle.dump("\n".join(words), f)
  downloads = []
  monkeypatch.setattr(spacy_pkuseg, "download_model", lambda *a, **k: downloads.append(a))
  monkeypatch.setattr(spacy_pkuseg.config, "pkuseg_home", str(home))
  named = spacy_pkuseg.pkuseg(model_name="medicine", user_dict=list(segmentation.user_terms()))
  plain = spacy_pkuseg.pkuseg(model_name=model_dir, user_dict=list(segmentation.user_terms()))
  ours = [pkuseg_segmenter.segment(t, model) for t in TEXTS]
  assert ours == [named.cut(t) for t in TEXTS]
  assert ours != [plain.cut(t) for t in TEXTS]  # the dictionary changed something
  assert pkuseg_segmenter.model_files(model) == ["features.msgpack", "medicine_dict.pkl",
                                                 "weights.npz"]
  assert len(downloads) == 1  # only the reference asked (and was stopped); we never do


def test_segmenter_per_process(model_dir, monkeypatch):
  first = pkuseg_segmenter.get_segmenter(model_dir)
  assert pkuseg_segmenter.get_segmenter(model_dir) is first
  monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked worker
  assert pkuseg_segmenter.get_segmenter(model_dir) is not first


# --- the word tokenizer -----------------------------------------------------------------------

def test_tokenizer_saves_its_model_and_loads_without_the_original(model_dir, reference,
                                                                  tmp_path):
  original = _copy(model_dir, tmp_path / "original")
  built = tok.build_tokenizer("word", TRAIN_REPORTS, min_count=2, vocab_size=8, language="zh",
                              segmenter="pkuseg", pkuseg_model=original)
  counts = {}
  for r in TRAIN_REPORTS:
    for w in reference.cut(clean_report(r)):
      counts[w] = counts.get(w, 0) + 1
  assert list(built.tokens) == list(tok.SPECIAL_TOKENS) + sorted(
      w for w, c in counts.items() if c >= 2)
  expected = {t: built.encode(t) for t in TEXTS}
  assert built.tokenize(TEXTS[-1]) == reference.cut(clean_report(TEXTS[-1]))

  saved = tmp_path / "tokenizer"
  built.save(saved)
  meta = json.loads((saved / "vocab.json").read_text("utf-8"))
  assert (meta["segmenter"], meta["pkuseg_model"]) == ("pkuseg", "pkuseg_model")
  for name in pkuseg_segmenter.model_files(original):
    assert (saved / "pkuseg_model" / name).read_bytes() == \
        open(os.path.join(original, name), "rb").read(), name
  shutil.rmtree(original)  # the tokenizer directory must be enough from here on

  loaded = tok.load_tokenizer(saved)
  assert isinstance(loaded, WordTokenizer) and loaded.segmenter == "pkuseg"
  assert loaded.pkuseg_model == str(saved / "pkuseg_model")
  assert loaded.tokens == built.tokens
  assert {t: loaded.encode(t) for t in TEXTS} == expected
  known = set(built.tokens)
  for text in TEXTS:  # words seen once are <unk> at min_count 2
    words = reference.cut(clean_report(text))
    assert loaded.decode(loaded.encode(text)) == "".join(
        w if w in known else "<unk>" for w in words), text
  clone = pickle.loads(pickle.dumps(loaded))  # as grain hands it to a spawned worker
  assert clone.encode(TEXTS[0]) == expected[TEXTS[0]]

  loaded.save(tmp_path / "again")  # a copy of the copy; saving in place changes nothing
  loaded.save(saved)
  for name in ("vocab.json", "pkuseg_model/weights.npz"):
    assert (tmp_path / "again" / name).read_bytes() == (saved / name).read_bytes(), name


def test_tokenizer_for_run_builds_then_loads_the_run_copy(model_dir, tmp_path):
  config = cnx2rg.get_config()
  config.text.segmenter, config.text.pkuseg_model = "pkuseg", model_dir
  config.text.min_count = 1
  prepared = types.SimpleNamespace(language="zh")
  texts = types.SimpleNamespace(reports=TRAIN_REPORTS)
  built = vocabulary.tokenizer_for_run(config.text, prepared, str(tmp_path), texts)
  assert built.segmenter == "pkuseg" and built.pkuseg_model == model_dir
  again = vocabulary.tokenizer_for_run(config.text, prepared, str(tmp_path), texts)
  assert again.pkuseg_model == str(tmp_path / "tokenizer" / "pkuseg_model")
  assert again.tokens == built.tokens and again.encode(TEXTS[-1]) == built.encode(TEXTS[-1])


def test_jieba_files_unchanged_and_old_files_load_as_jieba(tmp_path):
  built = WordTokenizer.build(TRAIN_REPORTS, min_count=1)
  built.save(tmp_path / "new")
  meta = json.loads((tmp_path / "new" / "vocab.json").read_text("utf-8"))
  assert list(meta) == ["kind", "language", "min_count", "tokens"]  # as before pkuseg
  assert os.listdir(tmp_path / "new") == ["vocab.json"]
  loaded = tok.load_tokenizer(tmp_path / "new")
  assert loaded.segmenter == "jieba" and loaded.pkuseg_model is None
  for text in TEXTS:
    assert loaded.tokenize(text) == segmentation.segment(clean_report(text))


def test_tokenizer_errors(model_dir, tmp_path):
  with pytest.raises(ValueError, match="unknown segmenter 'thulac'"):
    WordTokenizer.build(TRAIN_REPORTS, 1, segmenter="thulac")
  with pytest.raises(ValueError, match="cuts Chinese"):
    WordTokenizer.build(["the heart is normal ."], 1, language="en", segmenter="pkuseg",
                        pkuseg_model=model_dir)
  with pytest.raises(ValueError, match="splits reports itself"):
    tok.build_tokenizer("sentencepiece", TRAIN_REPORTS, min_count=1, vocab_size=400,
                        language="zh", segmenter="pkuseg", pkuseg_model=model_dir)
  saved = tmp_path / "tokenizer"
  WordTokenizer.build(TRAIN_REPORTS, 1, segmenter="pkuseg", pkuseg_model=model_dir).save(saved)
  shutil.rmtree(saved / "pkuseg_model")
  with pytest.raises(FileNotFoundError, match="vocab.json.*pkuseg_model.*does not exist"):
    tok.load_tokenizer(saved)
  meta = json.loads((saved / "vocab.json").read_text("utf-8"))
  meta["segmenter"] = "thulac"
  (saved / "vocab.json").write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
  with pytest.raises(ValueError, match="vocab.json.*unknown segmenter 'thulac'"):
    tok.load_tokenizer(saved)


# --- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "medicine", "spacy_ontonotes"])
def test_a_model_name_is_refused_and_nothing_downloads(name, monkeypatch):
  def no_download(*args, **kwargs):
    raise AssertionError(f"tried to download {args}")
  monkeypatch.setattr(spacy_pkuseg, "download_model", no_download)
  with pytest.raises(ValueError, match=f"'{name}' is a model name.*nothing downloads") as e:
    pkuseg_segmenter.segment("心影不大。", name)
  assert "\n" not in str(e.value) and "unzip" in str(e.value)
  with pytest.raises(ValueError, match="nothing downloads"):
    WordTokenizer.build(TRAIN_REPORTS, 1, segmenter="pkuseg", pkuseg_model=name)


def test_missing_directory_or_files(tmp_path):
  missing = tmp_path / "no_model"
  with pytest.raises(FileNotFoundError, match="no_model.*does not exist"):
    pkuseg_segmenter.segment("心影不大。", missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "features.msgpack").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="empty.*lacks the model files.*weights.npz"):
    pkuseg_segmenter.segment("心影不大。", empty)
  with pytest.raises(ValueError, match="none was given"):
    WordTokenizer.build(TRAIN_REPORTS, 1, segmenter="pkuseg")


def test_missing_package(model_dir, tmp_path, monkeypatch):
  fresh = _copy(model_dir, tmp_path / "fresh")  # not built in this process yet
  monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)  # `import spacy_pkuseg` now fails
  assert not pkuseg_segmenter.is_installed()
  with pytest.raises(ImportError, match="pip install spacy-pkuseg"):
    pkuseg_segmenter.segment("心影不大。", fresh)


# --- config checks ----------------------------------------------------------------------------

def _pkuseg_config(model_dir):
  config = cnx2rg.get_config()
  config.text.segmenter, config.text.pkuseg_model = "pkuseg", model_dir
  return config


def _config_error(config) -> str:
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(config)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_config_checks(model_dir, tmp_path, monkeypatch):
  config_checks.check(_pkuseg_config(model_dir))  # a good pkuseg config passes
  config = cnx2rg.get_config()
  config.text.segmenter = "thulac"
  assert "config key text.segmenter='thulac'" in _config_error(config)
  config = _pkuseg_config(model_dir)
  config.text.tokenizer = "sentencepiece"
  assert "splits reports itself" in _config_error(config)
  config = _pkuseg_config(model_dir)
  config.data.language = "en"
  assert "data.language='en'" in _config_error(config)
  for bad, expect in [("", "none was given"), ("medicine", "nothing downloads"),
                      (str(tmp_path / "gone"), "gone' does not exist")]:
    message = _config_error(_pkuseg_config(bad))
    assert f"config key text.pkuseg_model={bad!r}" in message and expect in message, bad
    assert "--config.text.pkuseg_model=" in message
  monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)
  assert "pip install spacy-pkuseg" in _config_error(_pkuseg_config(model_dir))


def test_workdir_keys(model_dir, tmp_path):
  workdir = str(tmp_path)
  config_checks.write_config(_pkuseg_config(model_dir), workdir)
  moved = _copy(model_dir, tmp_path / "moved")
  config_checks.check_workdir(_pkuseg_config(moved), workdir)  # the model's path may change
  with pytest.raises(config_checks.WorkdirError, match="text.segmenter .'pkuseg' there, "
                                                       "'jieba' here"):
    config_checks.check_workdir(cnx2rg.get_config(), workdir)
  # A config.json from before the option (no segmenter key) is a jieba run.
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["text"]["segmenter"], saved["text"]["pkuseg_model"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config_checks.check_workdir(cnx2rg.get_config(), workdir)
