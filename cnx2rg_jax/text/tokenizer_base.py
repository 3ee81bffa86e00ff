"""What the two tokenizers share: the special ids, the languages and kinds, the text each
encodes (`normalize`), and their `vocab.json` file.

`word_vocab.WordTokenizer` and `sentencepiece_model.SentencePieceTokenizer` build on this module;
`tokenizer` opens and builds either and re-exports these names, so callers import them there.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Sequence

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
