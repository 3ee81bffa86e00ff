"""A SentencePiece (unigram) subword tokenizer, trained in memory on the training reports.

Training sees exactly the text `encode` will see (clean_report output for Chinese), with the
identity normalization, no dummy prefix and no whitespace rewriting, so that every character,
。 and ， included, round-trips; byte fallback covers characters the training reports lacked.
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from cnx2rg_jax.text import tokenizer_base as tok

KIND = "sentencepiece"
MODEL_FILE = "sentencepiece.model"
SEED = 20240229  # SentencePiece's generator only drives sampling, but pin it anyway

_log = logging.getLogger(__name__)

_TRAIN_OPTIONS = dict(
    model_type="unigram",
    normalization_rule_name="identity",
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    character_coverage=1.0,
    byte_fallback=True,
    pad_id=tok.PAD_ID, bos_id=tok.BOS_ID, eos_id=tok.EOS_ID, unk_id=tok.UNK_ID,
    pad_piece=tok.SPECIAL_TOKENS[tok.PAD_ID], bos_piece=tok.SPECIAL_TOKENS[tok.BOS_ID],
    eos_piece=tok.SPECIAL_TOKENS[tok.EOS_ID], unk_piece=tok.SPECIAL_TOKENS[tok.UNK_ID],
    num_threads=1,  # multi-threaded EM sums in a varying order: not bit-reproducible
    max_sentence_length=1 << 16,  # bytes; the default 4192 would silently drop long reports
    minloglevel=1,  # warnings only: the INFO log is hundreds of lines per training
)

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


def _train(sentences: list[str], vocab_size: int, **extra) -> bytes:
  buf = io.BytesIO()
  spm.set_random_generator_seed(SEED)
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf,
                                 vocab_size=vocab_size, **_TRAIN_OPTIONS, **extra)
  return buf.getvalue()


class SentencePieceTokenizer:
  """SentencePiece model with ids PAD=0, BOS=1, EOS=2, UNK=3, then byte and learned pieces."""

  def __init__(self, model_proto: bytes, *, language: str = "zh",
               requested_vocab_size: int | None = None):
    """Wraps a serialized SentencePiece model; prefer `build` or `load`.

    Raises ValueError if the bytes are not a model or its special ids differ from ours.
    """
    self.language = tok.check_language(language)
    self._proto = bytes(model_proto)
    if not self._proto:  # SentencePiece takes b"" for "no model" and would not complain
      raise ValueError("not a SentencePiece model: no bytes")
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    except RuntimeError as e:
      raise ValueError(f"not a SentencePiece model: {e}") from e
    found = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
    if found != (tok.PAD_ID, tok.BOS_ID, tok.EOS_ID, tok.UNK_ID):
      raise ValueError(f"SentencePiece model has special ids (pad, bos, eos, unk) = {found}, "
                       f"expected {(tok.PAD_ID, tok.BOS_ID, tok.EOS_ID, tok.UNK_ID)}")
    self.requested_vocab_size = requested_vocab_size or self.vocab_size

  @classmethod
  def build(cls, reports: Iterable[str], vocab_size: int, language: str = "zh"
            ) -> "SentencePieceTokenizer":
    """Trains a unigram model with `vocab_size` pieces on the training `reports`.

    Reports are normalized as `encode` normalizes them (zh: clean_report) and empty ones are
    skipped. If the reports cannot fill `vocab_size` pieces, training is redone with a soft
    limit (hard_vocab_limit=False), which gives a smaller vocabulary, and a warning says so.
    Deterministic: the same reports in the same order give byte-identical models. Raises
    ValueError for no non-empty report, or a `vocab_size` below what the reports' distinct
    characters, the 256 byte pieces and the 4 specials need (the message gives that minimum).
    """
    tok.check_language(language)
    if isinstance(reports, str):
      raise ValueError("reports must be an iterable of reports, got a single str")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
      raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    vocab_size = int(vocab_size)
    sentences = [s for s in (tok.normalize(r, language) for r in reports) if s]
    if not sentences:
      raise ValueError("cannot train SentencePiece: no non-empty report")
    try:
      proto = _train(sentences, vocab_size)
    except RuntimeError as e:
      low = _TOO_LOW.search(str(e))
      if low:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: these reports need at least {low.group(2)} "
            "pieces (every distinct character, 256 byte pieces and 4 specials); ask for at "
            f"least {low.group(2)}") from e
      high = _TOO_HIGH.search(str(e))
      if not high:
        raise
      proto = _train(sentences, vocab_size, hard_vocab_limit=False)
      got = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
      _log.warning(
          "SentencePiece: %d training reports cannot fill vocab_size=%d (at most %s pieces); "
          "trained with a soft limit instead and got %d pieces", len(sentences), vocab_size,
          high.group(2), got)
    return cls(proto, language=language, requested_vocab_size=vocab_size)

  @property
  def vocab_size(self) -> int:
    """The number of ids, specials and byte pieces included."""
    return self._sp.get_piece_size()

  @property
  def model_proto(self) -> bytes:
    """The serialized model, as saved to sentencepiece.model."""
    return self._proto

  def id_to_token(self, i: int) -> str:
    """The piece of id `i`; an IndexError names an id outside [0, vocab_size)."""
    i = int(i)
    if not 0 <= i < self.vocab_size:
      raise IndexError(f"id {i} is outside this vocabulary's [0, {self.vocab_size})")
    return self._sp.id_to_piece(i)

  def token_to_id(self, token: str) -> int:
    """The id of piece `token`, or UNK_ID if there is no such piece."""
    return self._sp.piece_to_id(token)

  def tokenize(self, text: str) -> list[str]:
    """The pieces of normalized `text`."""
    return self._sp.encode(tok.normalize(text, self.language), out_type=str)

  def encode(self, text: str) -> list[int]:
    """The piece ids of `text` (normalized first), without BOS or EOS.

    Raises ValueError for a non-str.
    """
    return self._sp.encode(tok.normalize(text, self.language), out_type=int)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids`: stops at the first EOS, skips PAD and BOS, writes UNK as '<unk>'.

    decode(encode(x)) == clean_report(x) for any Chinese x (byte fallback leaves no UNK). An id
    outside the vocabulary raises IndexError.
    """
    n = self.vocab_size
    parts: list[str] = []
    run: list[int] = []
    for i in tok.content_ids(ids):
      if not 0 <= i < n:
        raise IndexError(f"id {i} is outside this vocabulary's [0, {n})")
      if i == tok.UNK_ID:
        # SentencePiece would render UNK as " ⁇ "; the project spells it like the word vocab.
        parts.append(self._sp.decode(run))
        parts.append(tok.SPECIAL_TOKENS[tok.UNK_ID])
        run = []
      else:
        run.append(i)
    parts.append(self._sp.decode(run))
    return "".join(parts)

  def save(self, directory: str | os.PathLike) -> None:
    """Writes `directory/sentencepiece.model` and `directory/vocab.json` (makes the directory)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, MODEL_FILE), "wb") as f:
      f.write(self._proto)
    tok.write_json(os.path.join(directory, tok.VOCAB_FILE), {
        "kind": KIND,
        "language": self.language,
        "vocab_size": self.vocab_size,
        "requested_vocab_size": self.requested_vocab_size,
        "model_file": MODEL_FILE,
    })

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "SentencePieceTokenizer":
    """Opens a model written by `save`; errors name the path and the fix."""
    meta = tok.read_vocab_json(directory, KIND)
    path = os.path.join(os.fspath(directory), MODEL_FILE)
    remedy = "rebuild it with SentencePieceTokenizer.build(...).save(directory)"
    try:
      with open(path, "rb") as f:
        proto = f.read()
    except OSError as e:
      raise FileNotFoundError(f"SentencePiece model {path!r} cannot be read ({e}); {remedy}") from e
    try:
      sp = cls(proto, language=meta["language"],
               requested_vocab_size=meta.get("requested_vocab_size"))
    except ValueError as e:
      raise ValueError(f"SentencePiece model {path!r} is corrupt: {e}; {remedy}") from e
    if meta.get("vocab_size") not in (None, sp.vocab_size):
      raise ValueError(f"{path!r} has {sp.vocab_size} pieces but its vocab.json says "
                       f"{meta['vocab_size']}: the two files do not belong together; {remedy}")
    return sp

  # SentencePieceProcessor does not pickle; input pipelines ship tokenizers to worker processes.
  def __getstate__(self) -> dict:
    return {"proto": self._proto, "language": self.language,
            "requested_vocab_size": self.requested_vocab_size}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["proto"], language=state["language"],
                  requested_vocab_size=state["requested_vocab_size"])

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer(language={self.language!r}, vocab_size={self.vocab_size})"
