"""The tokenizer interface shared by the word vocabulary and the SentencePiece model.

Both tokenizers (`word_vocab.WordTokenizer`, `sentencepiece_model.SentencePieceTokenizer`, also
importable from here) use the same four special ids, clean Chinese text with `clean_report`
before encoding, and save to a directory whose `vocab.json` names the kind, so that
`load_tokenizer` can open either. `encode_padded` turns a report into the fixed-length
[BOS] + content + [EOS] + padding arrays the model consumes.
"""

from __future__ import annotations

import os
from typing import Iterable, Protocol, Sequence

import numpy as np

from cnx2rg_jax.text.sentencepiece_model import SentencePieceTokenizer
from cnx2rg_jax.text.tokenizer_base import (  # noqa: F401  (the shared names, re-exported)
    BOS_ID, EOS_ID, KINDS, LANGUAGES, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS, UNK_ID, VOCAB_FILE,
    check_language, content_ids, normalize, read_vocab_json, write_json)
from cnx2rg_jax.text.word_vocab import WordTokenizer


class Tokenizer(Protocol):
  """What the data pipeline and the decoder rely on."""

  language: str

  @property
  def vocab_size(self) -> int: ...

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def save(self, directory: str | os.PathLike) -> None: ...


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
  """Opens the tokenizer saved in `directory`, whichever kind its vocab.json names.

  Raises FileNotFoundError or ValueError (see `read_vocab_json`) naming the path and the fix.
  """
  kind = read_vocab_json(directory)["kind"]
  if kind == "word":
    return WordTokenizer.load(directory)
  return SentencePieceTokenizer.load(directory)


def build_tokenizer(kind: str, reports: Iterable[str], *, min_count: int, vocab_size: int,
                    language: str, segmenter: str = "jieba", pkuseg_model: str = ""
                    ) -> Tokenizer:
  """Builds a tokenizer of `kind` ("word" | "sentencepiece") on the training `reports`.

  "word" uses `min_count` (tokens seen fewer times become <unk>) and cuts Chinese with
  `segmenter` ("jieba" | "pkuseg", the latter with the local model directory `pkuseg_model`);
  "sentencepiece" uses `vocab_size` and splits text itself, so it takes only "jieba" (the
  default, meaning no word segmenter). An unknown kind raises ValueError naming it and the
  choices.
  """
  if kind == "word":
    return WordTokenizer.build(reports, min_count, language=language, segmenter=segmenter,
                               pkuseg_model=pkuseg_model or None)
  if kind == "sentencepiece":
    if segmenter != "jieba":
      raise ValueError(f"a sentencepiece tokenizer splits reports itself; segmenter "
                       f"{segmenter!r} applies to the word tokenizer only")
    return SentencePieceTokenizer.build(reports, vocab_size, language=language)
  raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def encode_padded(tokenizer: Tokenizer, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Encodes `text` as int32 arrays (ids, mask), both of length `max_len`.

  ids = [BOS] + content + [EOS] + [PAD]...; the content is cut to its first max_len - 2 tokens
  so that EOS is always present. mask is 1 from BOS to EOS inclusive and 0 on the padding, so
  mask.sum() == len(content) + 2. Raises ValueError if max_len < 2.
  """
  if max_len < 2:
    raise ValueError(f"max_len must be at least 2 (room for BOS and EOS), got {max_len}")
  content = tokenizer.encode(text)[:max_len - 2]
  n = len(content) + 2
  ids = np.zeros(max_len, np.int32)  # zeros == PAD_ID
  ids[0] = BOS_ID
  ids[1:n - 1] = content
  ids[n - 1] = EOS_ID
  mask = np.zeros(max_len, np.int32)
  mask[:n] = 1
  return ids, mask
