"""Tests of report cleaning, jieba segmentation and the two tokenizers."""

from __future__ import annotations

import collections
import json
import os
import pickle

import numpy as np
import pytest

from cnx2rg_jax.text import keywords
from cnx2rg_jax.text import tokenizer as tok
from cnx2rg_jax.text.cleaning import clean_report, join_sentences, split_sentences
from cnx2rg_jax.text.segmentation import get_tokenizer, segment, user_terms
from cnx2rg_jax.text.sentencepiece_model import SentencePieceTokenizer
from cnx2rg_jax.text.word_vocab import WordTokenizer

# Realistic findings/impressions; several reports per line of thought so words repeat.
CORPUS = [
    "两肺纹理增强，右下肺野见片状密度增高影，边缘模糊。心影不大。右侧肋膈角变钝。",
    "两肺未见明显实质性病变。心影大小形态未见异常。纵隔居中。两侧肋膈角锐利。",
    "两肺纹理清晰，未见明显实质性病变。心影不大。两侧膈面光整，肋膈角锐利。",
    "两肺纹理增多、增粗。心影不大。主动脉结突出。两侧肋膈角锐利。",
    "左下肺野见斑片状影，边缘模糊。心影不大。纵隔居中。左侧肋膈角变钝。",
    "右侧胸腔积液。右侧肋膈角消失。心影不大。纵隔居中。",
    "左侧气胸，左肺压缩约30%。纵隔居中。心影不大。",
    "心脏起搏器置入术后改变。两肺纹理增强。心影增大。",
    "胸骨见钢丝影，心脏术后改变。两肺未见明显实质性病变。",
    "右侧第5、6肋骨骨折。右侧少量气胸。两肺纹理增强。",
    "两肺透亮度增高，肺纹理稀疏，考虑肺气肿。心影狭长。两侧膈面低平。",
    "右上肺见条索影及钙化灶。心影不大。纵隔居中。",
    "主动脉弓迂曲，可见钙化。心影增大。两肺纹理增强。",
    "右下肺野见片状密度增高影。右侧肋膈角变钝。心影不大。",
    "两肺门影增浓。两肺纹理增强、模糊。心影不大。",
    "右侧引流管置入术后改变。右侧少量气胸。右肺部分不张。",
    "胸椎侧弯。两肺纹理增强。心影不大。",
    "气管居中。纵隔未见增宽。两肺未见明显实质性病变。",
    "两肺未见明显实质性病变。心影大小形态未见异常。两侧膈面光整。",
    "右肺中叶见片状影，考虑肺不张。心影不大。",
    "两肺纹理增强，未见明显实质性病变。心影不大。纵隔居中。两侧肋膈角锐利。",
    "两侧胸腔积液，两侧肋膈角变钝。心影增大。",
    "左上肺见斑片状影。左侧胸膜增厚。心影不大。",
    "右侧膈下见游离气体。两肺纹理增强。",
    "两肺纹理增强、紊乱。主动脉结突出。心影增大。",
]
# Sentences used for round trips: every report above, cut into its sentences.
SENTENCES = [s for r in CORPUS for s in split_sentences(clean_report(r))]


@pytest.fixture(scope="module")
def word_tok():
  return WordTokenizer.build(CORPUS, min_count=1)


@pytest.fixture(scope="module")
def sp_tok():
  return SentencePieceTokenizer.build(CORPUS, vocab_size=400)


# --- cleaning ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, cleaned", [
    ("心影大小约１２ＡＢ", "心影大小约12AB。"),
    ("病灶大小约３．５ｃｍ×２ｃｍ", "病灶大小约3.5cm×2cm。"),
    ("两肺纹理增强,右下肺野见片状影.心影不大.", "两肺纹理增强，右下肺野见片状影。心影不大。"),
    ("结节直径3.5cm,边缘光整", "结节直径3.5cm，边缘光整。"),
    (" 两肺 纹理\t增强\n\n心影\u3000不大 ", "两肺纹理增强心影不大。"),
    ("1.两肺纹理增强。2.心影不大。", "两肺纹理增强。心影不大。"),
    ("1、两肺纹理增强\n2、心影不大\n3、纵隔居中", "两肺纹理增强。心影不大。纵隔居中。"),
    ("（1）两肺纹理增强；（2）心影不大", "两肺纹理增强；心影不大。"),
    ("(1)两肺纹理增强;(2)心影不大", "两肺纹理增强；心影不大。"),
    ("①两肺纹理增强。②心影不大。", "两肺纹理增强。心影不大。"),
    ("一、两肺纹理增强。二、心影不大。", "两肺纹理增强。心影不大。"),
    ("右侧第5、6肋骨骨折", "右侧第5、6肋骨骨折。"),
    ("两肺纹理增强。。心影不大，。纵隔居中，", "两肺纹理增强。心影不大。纵隔居中。"),
    ("两肺纹理增强，，心影不大；。", "两肺纹理增强，心影不大。"),
    ("右侧第5肋骨折?", "右侧第5肋骨折？。"),
    ("印象:两肺(右侧为著)纹理增强", "印象：两肺（右侧为著）纹理增强。"),
    ("心影不大。", "心影不大。"),
    ("", ""),
    (" \n。。 ", ""),
])
def test_clean_report(raw, cleaned):
  assert clean_report(raw) == cleaned
  assert clean_report(cleaned) == cleaned  # idempotent


def test_clean_report_corpus_properties():
  for report in CORPUS:
    c = clean_report(report)
    assert c.endswith("。") and clean_report(c) == c
    assert not any(ch.isspace() for ch in c)


@pytest.mark.parametrize("bad", [None, 3, b"\xe5\xbf\x83", ["心影不大。"]])
def test_non_str_raises(bad):
  with pytest.raises(ValueError, match="str"):
    clean_report(bad)
  with pytest.raises(ValueError, match="str"):
    segment(bad)


def test_split_and_join_sentences():
  text = clean_report("两肺纹理增强；右下肺野见片状影。心影不大。纵隔居中")
  sentences = split_sentences(text)
  assert sentences == ["两肺纹理增强；右下肺野见片状影。", "心影不大。", "纵隔居中。"]
  assert join_sentences(sentences) == text
  assert split_sentences("") == []
  with pytest.raises(ValueError):
    join_sentences("心影不大。")


# --- segmentation -----------------------------------------------------------------------------

def _cuts_inside(tokens, text, term):
  """True if a token boundary falls strictly inside an occurrence of `term` in `text`."""
  bounds, pos = set(), 0
  for t in tokens:
    pos += len(t)
    bounds.add(pos)
  start = text.find(term)
  assert start >= 0, (term, text)
  return any(b in bounds for b in range(start + 1, start + len(term)))


@pytest.mark.parametrize("sentence, term", [
    ("两侧肋膈角锐利。", "肋膈角"),
    ("主动脉结突出。", "主动脉结"),
    ("右下肺野见片状密度增高影。", "密度增高影"),
    ("右下肺野见片状密度增高影。", "肺野"),
    ("左侧少量胸腔积液。", "胸腔积液"),
    ("心影大小形态未见异常。", "心影"),
    ("胸骨见钢丝影。", "钢丝"),
])
def test_user_terms_stay_whole(sentence, term):
  tokens = segment(sentence)
  assert "".join(tokens) == sentence
  assert not _cuts_inside(tokens, sentence, term), tokens
  assert "。" in tokens  # punctuation is a token of its own


def test_every_user_term_is_one_token():
  terms = user_terms()
  assert {"肋膈角", "主动脉结", "密度增高影"} <= set(terms)
  assert {t for t in keywords.TERM_TO_KEY if len(t) > 1} <= set(terms)
  assert [t for t in terms if segment(t) != [t]] == []


def test_segment_concatenates_and_matches_jieba():
  jieba_tok = get_tokenizer()
  assert get_tokenizer() is jieba_tok  # built once per process
  for report in CORPUS + ["a b\t心影 3.5cm"]:
    text = clean_report(report) if " " not in report else report
    tokens = segment(text)
    assert "".join(tokens) == text
    assert tokens == list(jieba_tok.cut(text, HMM=False))  # the block cache changes nothing


# --- tokenizers -------------------------------------------------------------------------------

def test_word_min_count_matches_counter():
  counts = collections.Counter(w for r in CORPUS for w in segment(clean_report(r)))
  for min_count in (1, 2, 3, 5):
    vocab = WordTokenizer.build(CORPUS, min_count=min_count)
    expected = sorted(w for w, c in counts.items() if c >= min_count)
    assert list(vocab.tokens) == list(tok.SPECIAL_TOKENS) + expected
    for w, c in counts.items():
      assert (vocab.token_to_id(w) != tok.UNK_ID) == (c >= min_count)


def test_word_round_trip_and_ids(word_tok):
  assert [word_tok.id_to_token(i) for i in range(4)] == list(tok.SPECIAL_TOKENS)
  for text in CORPUS + SENTENCES:
    ids = word_tok.encode(text)
    assert tok.UNK_ID not in ids and tok.BOS_ID not in ids and tok.EOS_ID not in ids
    assert word_tok.decode(ids) == clean_report(text)
  # decode stops at EOS and skips PAD/BOS, also for numpy input
  ids = word_tok.encode("心影不大。")
  arr = np.array([tok.BOS_ID] + ids + [tok.EOS_ID] + ids + [tok.PAD_ID] * 3)
  assert word_tok.decode(arr) == "心影不大。"


def test_word_unknown_tokens(word_tok):
  ids = word_tok.encode("心影不大，骶骨骨质破坏。")
  assert tok.UNK_ID in ids
  decoded = word_tok.decode(ids)
  assert decoded.startswith("心影不大，") and "<unk>" in decoded
  assert word_tok.token_to_id("骶骨骨质破坏") == tok.UNK_ID
  with pytest.raises(IndexError):
    word_tok.decode([word_tok.vocab_size])


def test_word_english():
  reports = ["the heart is normal . lungs are clear .", "the lungs are clear .\nno effusion ."]
  vocab = WordTokenizer.build(reports, min_count=2, language="en")
  assert set(vocab.tokens[4:]) == {"the", "are", "clear", "lungs", "."}
  assert vocab.decode(vocab.encode("lungs are clear .")) == "lungs are clear ."
  assert vocab.decode(vocab.encode("no  effusion")) == "<unk> <unk>"


def test_sentencepiece_round_trip(sp_tok):
  assert [sp_tok.id_to_token(i) for i in range(4)] == list(tok.SPECIAL_TOKENS)
  for text in CORPUS + SENTENCES + ["骶骨骨质破坏，大小约3.5cm。"]:  # the last has unseen chars
    ids = sp_tok.encode(text)
    assert tok.UNK_ID not in ids and tok.EOS_ID not in ids
    assert sp_tok.decode(ids) == clean_report(text)
  assert sp_tok.decode([tok.BOS_ID] + sp_tok.encode("心影不大。") + [tok.EOS_ID, 5, 6]) == "心影不大。"
  assert sp_tok.decode([sp_tok.token_to_id("。"), tok.UNK_ID]) == "。<unk>"
  assert pickle.loads(pickle.dumps(sp_tok)).encode("心影不大。") == sp_tok.encode("心影不大。")


def test_sentencepiece_small_corpus_and_too_small_vocab(caplog):
  # 25 reports cannot fill 2000 pieces: a soft limit and a warning instead of a failure
  with caplog.at_level("WARNING"):
    sp = SentencePieceTokenizer.build(CORPUS, vocab_size=2000)
  assert sp.vocab_size < 2000 and "soft limit" in caplog.text
  with pytest.raises(ValueError, match="at least"):
    SentencePieceTokenizer.build(CORPUS, vocab_size=50)


@pytest.mark.parametrize("kind", ["word", "sentencepiece"])
def test_save_load_and_determinism(kind, tmp_path):
  def build(reports):
    return tok.build_tokenizer(kind, reports, min_count=2, vocab_size=400, language="zh")

  first, second = build(CORPUS), build(list(CORPUS))
  first.save(tmp_path / "a")
  second.save(tmp_path / "b")
  names = sorted(os.listdir(tmp_path / "a"))
  assert names == sorted(os.listdir(tmp_path / "b"))
  for name in names:
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
  assert json.loads((tmp_path / "a" / "vocab.json").read_text("utf-8"))["kind"] == kind

  loaded = tok.load_tokenizer(tmp_path / "a")
  assert type(loaded) is type(first) and loaded.vocab_size == first.vocab_size
  for text in SENTENCES:
    assert loaded.encode(text) == first.encode(text)
    assert loaded.decode(loaded.encode(text)) == first.decode(first.encode(text))


def test_load_errors(tmp_path, word_tok):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match="nowhere.*build_tokenizer"):
    tok.load_tokenizer(missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="vocab.json"):
    tok.load_tokenizer(empty)
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  (corrupt / "vocab.json").write_text("{not json", "utf-8")
  with pytest.raises(ValueError, match="corrupt.*build_tokenizer"):
    tok.load_tokenizer(corrupt)
  (corrupt / "vocab.json").write_text('{"kind": "bpe", "language": "zh"}', "utf-8")
  with pytest.raises(ValueError, match="'bpe'"):
    tok.load_tokenizer(corrupt)
  spdir = tmp_path / "sp"
  SentencePieceTokenizer.build(CORPUS, vocab_size=400).save(spdir)
  (spdir / "sentencepiece.model").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="sentencepiece.model.*corrupt"):
    tok.load_tokenizer(spdir)
  word_tok.save(tmp_path / "w")
  with pytest.raises(ValueError, match="not a 'sentencepiece'"):
    SentencePieceTokenizer.load(tmp_path / "w")


def test_build_tokenizer_unknown_kind():
  with pytest.raises(ValueError, match="'bpe'.*word, sentencepiece"):
    tok.build_tokenizer("bpe", CORPUS, min_count=1, vocab_size=400, language="zh")
  with pytest.raises(ValueError, match="'fr'"):
    WordTokenizer.build(CORPUS, min_count=1, language="fr")
  with pytest.raises(ValueError, match="min_count"):
    WordTokenizer.build(CORPUS, min_count=0)


def test_encode_padded(word_tok, sp_tok):
  assert tok.WordTokenizer is WordTokenizer  # the re-export
  for t in (word_tok, sp_tok):
    text = CORPUS[0]
    content = t.encode(text)
    n = len(content)
    ids, mask = tok.encode_padded(t, text, n + 10)
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape == (n + 10,)
    assert ids[0] == tok.BOS_ID and ids[n + 1] == tok.EOS_ID and list(ids[1:n + 1]) == content
    assert (ids[n + 2:] == tok.PAD_ID).all() and mask.sum() == n + 2 and mask[:n + 2].all()
    assert t.decode(ids) == clean_report(text)
    for max_len in (2, 3, 7, n + 1, n + 2):  # truncation always keeps EOS
      ids, mask = tok.encode_padded(t, text, max_len)
      kept = min(n, max_len - 2)
      assert ids[0] == tok.BOS_ID and ids[kept + 1] == tok.EOS_ID
      assert list(ids[1:kept + 1]) == content[:kept] and mask.sum() == kept + 2
    ids, mask = tok.encode_padded(t, "", 5)
    assert list(ids) == [tok.BOS_ID, tok.EOS_ID, 0, 0, 0] and list(mask) == [1, 1, 0, 0, 0]
  with pytest.raises(ValueError, match="max_len"):
    tok.encode_padded(word_tok, "心影不大。", 1)
