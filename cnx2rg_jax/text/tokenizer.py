"""The tokenizer interface shared by the word vocabulary and the SentencePiece model.

Both tokenizers (`word_vocab.WordTokenizer`, `sentencepiece_model.SentencePieceTokenizer`, also
importable from here) use the same four special ids, clean Chinese text with `clean_report`
before encoding, and save to a directory whose `vocab.json` names the kind, so that
`load_tokenizer` can open either. `encode_padded` turns a report into the fixed-length
[BOS] + content + [EOS] + padding arrays the model consumes.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from cnx2rg_jax.text.cleaning import clean_report

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")  # indexed by id
NUM_SPECIAL = len(SPECIAL_TOKENS)

LANGUAGES = ("zh", "en")
KINDS = ("word", "sentencepiece")
VOCAB_FILE = "vocab.json"


class Tokenizer(Protocol):
  """What the data pipeline and the decoder rely on."""

  language: str

  @property
  def vocab_size(self) -> int: ...

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def save(self, directory: str | os.PathLike) -> None: ...


def check_language(language: str) -> str:
  """Returns `language` if it is one of LANGUAGES; a ValueError names it and the choices."""
  if language not in LANGUAGES:
    raise ValueError(f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}")
  return language


def normalize(text: str, language: str) -> str:
  """The text a tokenizer of `language` encodes: clean_report(text) for zh, text as is for en.

  English reports are cleaned by their caller (the project's English cleaning lives with the
  English data), so here they only get a type check. Raises ValueError for a non-str.
  """
  if language == "zh":
    return clean_report(text)
  if not isinstance(text, str):
    raise ValueError(f"text must be a str, got {type(text).__name__}")
  return text


def content_ids(ids: Sequence[int] | np.ndarray) -> Iterator[int]:
  """The ids of `ids` that carry text: those before the first EOS, less PAD and BOS."""
  if isinstance(ids, np.ndarray):
    ids = ids.tolist()  # python ints: faster to loop over and hashable as dict keys
  for i in ids:
    i = int(i)
    if i == EOS_ID:
      return
    if i != PAD_ID and i != BOS_ID:
      yield i


def write_json(path: str | os.PathLike, obj: dict) -> None:
  """Writes `obj` as UTF-8 JSON with a fixed layout, so equal objects give equal bytes."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, ensure_ascii=False, indent=1)
    f.write("\n")


def read_vocab_json(directory: str | os.PathLike, kind: str | None = None) -> dict:
  """Reads `directory/vocab.json`, checking that it is a tokenizer file (of `kind` if given).

  A missing directory or file raises FileNotFoundError, an unreadable or foreign file raises
  ValueError; both messages name the path and say how to make a good one.
  """
  directory = os.fspath(directory)
  path = os.path.join(directory, VOCAB_FILE)
  remedy = ("build a tokenizer with cnx2rg_jax.text.tokenizer.build_tokenizer(...) and save it "
            "there with .save(directory), or point to the directory that holds its vocab.json")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"tokenizer directory {directory!r} does not exist; {remedy}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer file {path!r} does not exist; {remedy}")
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"tokenizer file {path!r} is corrupt ({e}); {remedy}") from e
  if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
    found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
    raise ValueError(f"tokenizer file {path!r} has kind {found!r}, expected one of "
                     f"{', '.join(KINDS)}; {remedy}")
  if kind is not None and meta["kind"] != kind:
    raise ValueError(f"tokenizer file {path!r} holds a {meta['kind']!r} tokenizer, not a "
                     f"{kind!r} one; open it with load_tokenizer({directory!r})")
  if meta.get("language") not in LANGUAGES:
    raise ValueError(f"tokenizer file {path!r} has language {meta.get('language')!r}, expected "
                     f"one of {', '.join(LANGUAGES)}; {remedy}")
  return meta


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
  """Opens the tokenizer saved in `directory`, whichever kind its vocab.json names.

  Raises FileNotFoundError or ValueError (see `read_vocab_json`) naming the path and the fix.
  """
  kind = read_vocab_json(directory)["kind"]
  if kind == "word":
    from cnx2rg_jax.text.word_vocab import WordTokenizer
    return WordTokenizer.load(directory)
  from cnx2rg_jax.text.sentencepiece_model import SentencePieceTokenizer
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
    from cnx2rg_jax.text.word_vocab import WordTokenizer
    return WordTokenizer.build(reports, min_count, language=language, segmenter=segmenter,
                               pkuseg_model=pkuseg_model or None)
  if kind == "sentencepiece":
    if segmenter != "jieba":
      raise ValueError(f"a sentencepiece tokenizer splits reports itself; segmenter "
                       f"{segmenter!r} applies to the word tokenizer only")
    from cnx2rg_jax.text.sentencepiece_model import SentencePieceTokenizer
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


def __getattr__(name: str):
  # The implementations import this module for the shared constants, so they are re-exported
  # lazily here instead of imported at the top (which would be a circular import).
  if name == "WordTokenizer":
    from cnx2rg_jax.text.word_vocab import WordTokenizer
    return WordTokenizer
  if name == "SentencePieceTokenizer":
    from cnx2rg_jax.text.sentencepiece_model import SentencePieceTokenizer
    return SentencePieceTokenizer
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
