"""A word-level vocabulary: jieba (or pkuseg) words for Chinese, whitespace-separated for English.

This is R2Gen's tokenizer: count the words of the training reports and keep those seen at least
`min_count` times; every other word encodes as <unk>.

Chinese is segmented by jieba (`segmentation`), or by a local spacy-pkuseg model
(`pkuseg_segmenter`). The vocabulary remembers its segmenter: a pkuseg vocabulary saves a copy
of its model in DIR/pkuseg_model beside DIR/vocab.json, so the directory alone encodes reports
as at build time. A vocab.json without a "segmenter" (jieba's, and every file written before
pkuseg was an option) means jieba.
"""

from __future__ import annotations

import collections
import os
from typing import Iterable, Sequence

import numpy as np

from cnx2rg_jax.text import pkuseg_segmenter
from cnx2rg_jax.text import segmentation
from cnx2rg_jax.text import tokenizer_base as tok

KIND = "word"
SEGMENTERS = ("jieba", "pkuseg")  # how Chinese reports are cut into words
PKUSEG_MODEL_DIR = "pkuseg_model"  # a pkuseg vocabulary's model copy, inside its directory


def _split(text: str, language: str, pkuseg_model: str | None = None) -> list[str]:
  """The words of normalized `text`: jieba words, or pkuseg words with the model in
  `pkuseg_model` (zh), or whitespace-separated words (en)."""
  if language == "zh":
    if pkuseg_model is not None:
      return pkuseg_segmenter.segment(text, pkuseg_model)
    return segmentation.segment(text)
  # R2Gen splits with str.split(): IU X-Ray reports keep their newlines after cleaning (see
  # english.py), and a newline or a doubled space must not glue words or make "" tokens.
  return text.split()


def check_segmenter(segmenter: str, pkuseg_model: str | os.PathLike | None, language: str
                    ) -> str | None:
  """The absolute pkuseg model directory `segmenter` uses (None for jieba).

  Raises ValueError for an unknown segmenter, pkuseg for English, or a bare pkuseg model name;
  FileNotFoundError for a missing model directory or model files.
  """
  if segmenter not in SEGMENTERS:
    raise ValueError(f"unknown segmenter {segmenter!r}; choose one of {', '.join(SEGMENTERS)}")
  if segmenter == "jieba":
    return None
  if language != "zh":
    raise ValueError(f"the {segmenter} segmenter cuts Chinese; {language!r} reports are split "
                     "at whitespace, use segmenter='jieba' (the default) for them")
  return pkuseg_segmenter.check_model_dir(pkuseg_model or "")


class WordTokenizer:
  """Word vocabulary with ids PAD=0, BOS=1, EOS=2, UNK=3 followed by the words in sorted order."""

  def __init__(self, tokens: Sequence[str], *, language: str = "zh", min_count: int = 1,
               segmenter: str = "jieba", pkuseg_model: str | os.PathLike | None = None):
    """Wraps a full token list (the 4 special tokens first, in id order) as a tokenizer.

    Prefer `build` or `load`. `segmenter` cuts Chinese text: "jieba", or "pkuseg" with the
    local model directory `pkuseg_model`. Raises ValueError if the specials are not first or a
    token repeats, and the errors of `check_segmenter`.
    """
    tokens = tuple(tokens)
    if tokens[:tok.NUM_SPECIAL] != tok.SPECIAL_TOKENS:
      raise ValueError(f"a word vocabulary must start with {tok.SPECIAL_TOKENS}, "
                       f"got {tokens[:tok.NUM_SPECIAL]}")
    self.language = tok.check_language(language)
    self.min_count = int(min_count)
    self.segmenter = segmenter
    self.pkuseg_model = check_segmenter(segmenter, pkuseg_model, language)
    self._tokens = tokens
    self._ids = {t: i for i, t in enumerate(tokens)}
    if len(self._ids) != len(tokens):
      dupes = sorted(t for t, c in collections.Counter(tokens).items() if c > 1)
      raise ValueError(f"a word vocabulary lists these tokens more than once: {dupes[:10]}")

  @classmethod
  def build(cls, reports: Iterable[str], min_count: int, language: str = "zh",
            segmenter: str = "jieba", pkuseg_model: str | os.PathLike | None = None
            ) -> "WordTokenizer":
    """Builds the vocabulary of the training `reports`.

    Each report is normalized (zh: clean_report; en: taken as already clean) and split into
    words (zh: by `segmenter`, see __init__); a word enters the vocabulary iff it occurs at
    least `min_count` times over all reports. Words are sorted, so the same reports always give
    the same ids whatever their order. Raises ValueError for min_count < 1, an unknown language
    or a non-str report, and the errors of `check_segmenter`.
    """
    tok.check_language(language)
    model_dir = check_segmenter(segmenter, pkuseg_model, language)
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
        or min_count < 1:
      raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    if isinstance(reports, str):
      raise ValueError("reports must be an iterable of reports, got a single str")
    counts: collections.Counter[str] = collections.Counter()
    for report in reports:
      counts.update(_split(tok.normalize(report, language), language, model_dir))
    specials = set(tok.SPECIAL_TOKENS)  # a literal "<unk>" in a report is the unknown word
    words = sorted(w for w, c in counts.items() if c >= min_count and w not in specials)
    return cls(tok.SPECIAL_TOKENS + tuple(words), language=language, min_count=int(min_count),
               segmenter=segmenter, pkuseg_model=model_dir)

  @property
  def vocab_size(self) -> int:
    """The number of ids, the 4 specials included."""
    return len(self._tokens)

  @property
  def tokens(self) -> tuple[str, ...]:
    """All tokens in id order, the specials first."""
    return self._tokens

  def id_to_token(self, i: int) -> str:
    """The token of id `i`; an IndexError names an id outside [0, vocab_size)."""
    i = int(i)
    if not 0 <= i < len(self._tokens):
      raise IndexError(f"id {i} is outside this vocabulary's [0, {len(self._tokens)})")
    return self._tokens[i]

  def token_to_id(self, token: str) -> int:
    """The id of `token`, or UNK_ID if it is not in the vocabulary."""
    return self._ids.get(token, tok.UNK_ID)

  def tokenize(self, text: str) -> list[str]:
    """The words `encode` would look up: normalized `text` split as at build time."""
    return _split(tok.normalize(text, self.language), self.language, self.pkuseg_model)

  def encode(self, text: str) -> list[int]:
    """The ids of the words of `text` (normalized first); unknown words become UNK_ID.

    No BOS or EOS is added (see tokenizer.encode_padded). Raises ValueError for a non-str.
    """
    get = self._ids.get
    return [get(w, tok.UNK_ID) for w in self.tokenize(text)]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids`: stops at the first EOS, skips PAD and BOS, writes UNK as '<unk>'.

    Words are joined with '' (zh) or ' ' (en), so decode(encode(x)) == clean_report(x) for a
    Chinese x whose words are all in the vocabulary. An id outside the vocabulary raises
    IndexError.
    """
    tokens = self._tokens
    n = len(tokens)
    words = []
    for i in tok.content_ids(ids):
      if not 0 <= i < n:
        raise IndexError(f"id {i} is outside this vocabulary's [0, {n})")
      words.append(tokens[i])
    return ("" if self.language == "zh" else " ").join(words)

  def save(self, directory: str | os.PathLike) -> None:
    """Writes `directory/vocab.json` (creating the directory), the same bytes for equal vocabs.

    A pkuseg vocabulary also copies its model into `directory/pkuseg_model`; a jieba one writes
    no "segmenter" field, so its file is what it was before pkuseg was an option.
    """
    os.makedirs(directory, exist_ok=True)
    meta = {"kind": KIND, "language": self.language, "min_count": self.min_count}
    if self.segmenter != "jieba":
      pkuseg_segmenter.copy_model(self.pkuseg_model, os.path.join(directory, PKUSEG_MODEL_DIR))
      meta.update(segmenter=self.segmenter, pkuseg_model=PKUSEG_MODEL_DIR)
    meta["tokens"] = list(self._tokens)
    tok.write_json(os.path.join(directory, tok.VOCAB_FILE), meta)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "WordTokenizer":
    """Opens a vocabulary written by `save`; errors name the path and the fix."""
    meta = tok.read_vocab_json(directory, KIND)
    path = os.path.join(os.fspath(directory), tok.VOCAB_FILE)
    tokens = meta.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
      raise ValueError(f"tokenizer file {path!r} has no list of str 'tokens'; rebuild it with "
                       "WordTokenizer.build(...).save(directory)")
    segmenter = meta.get("segmenter", "jieba")  # files without one predate pkuseg: jieba
    model_dir = None
    if segmenter == "pkuseg":  # any other but jieba is refused by check_segmenter below
      model = meta.get("pkuseg_model")
      model_dir = os.path.join(os.fspath(directory), model) if isinstance(model, str) else ""
      if model_dir and not os.path.isdir(model_dir):
        raise FileNotFoundError(
            f"tokenizer file {path!r} segments with the {segmenter} model in {model_dir!r}, "
            f"which does not exist; copy the tokenizer directory whole (vocab.json and "
            f"{model}/), or rebuild it with WordTokenizer.build(...).save(directory)")
    try:
      return cls(tokens, language=meta["language"], min_count=meta.get("min_count", 1),
                 segmenter=segmenter, pkuseg_model=model_dir)
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(f"tokenizer file {path!r} is not a valid word vocabulary: {e}") from e

  def __repr__(self) -> str:
    segmenter = "" if self.segmenter == "jieba" else f"segmenter={self.segmenter!r}, "
    return (f"WordTokenizer(language={self.language!r}, min_count={self.min_count}, "
            f"{segmenter}vocab_size={self.vocab_size})")
