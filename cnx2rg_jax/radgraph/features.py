"""What the CN-RadGraph extractor reads and predicts: characters, BIO tags, entity and pair arrays.

* Characters: a `CharVocab` (PAD 0, UNK 1, then the training texts' characters by frequency).
* Entities are BIO tags on characters: "O", then "B-<label>", "I-<label>" for each label of
  `report_graph.ENTITY_LABELS`. Spans may not overlap (annotations are checked for that).
* Relations are a class per ordered entity pair (head, tail): 0 none, then 1 + the index of the
  label in `report_graph.RELATION_LABELS` (located_at 1, modify 2).
* Length buckets: a batch is cut to the bucket of its longest window (a multiple of the
  model's `bucket_step`, at most max_chars), so short reports do not pay for the longest one's
  padding. Each bucket is one more compiled shape.
* Windows: a report longer than `max_chars` characters is cut into windows at sentence ends
  (。！？；and newlines), packing whole sentences while they fit; a single sentence longer than
  the window is cut hard. Windows for training also hold at most `max_entities` entities.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Optional, Sequence

import numpy as np

from cnx2rg_jax.text import cleaning
from cnx2rg_jax.text.report_graph import ENTITY_LABELS, RELATION_LABELS

PAD, UNK = 0, 1
TAGS = ("O",) + tuple(f"{p}-{l}" for l in ENTITY_LABELS for p in ("B", "I"))
NUM_TAGS = len(TAGS)
NUM_RELATION_CLASSES = 1 + len(RELATION_LABELS)
_LABEL_INDEX = {l: i for i, l in enumerate(ENTITY_LABELS)}
_RELATION_INDEX = {l: i + 1 for i, l in enumerate(RELATION_LABELS)}
SENTENCE_ENDS = "。！？；\n"


def bucket_length(length: int, max_chars: int, step: int) -> int:
  """The padded length of a batch whose longest window has `length` characters."""
  return min(max_chars, max(step, -(-length // step) * step))


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """Characters <-> ids; id 0 pads, id 1 stands for any character not seen in training."""

  chars: tuple[str, ...]  # ids 2.. in order

  @classmethod
  def build(cls, texts: Iterable[str], min_count: int = 1) -> "CharVocab":
    counts = collections.Counter(ch for t in texts for ch in t)
    kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    return cls(tuple(kept))

  @property
  def size(self) -> int:
    return len(self.chars) + 2

  def encode(self, text: str) -> np.ndarray:
    index = self._index
    return np.array([index.get(ch, UNK) for ch in text], np.int32)

  @property
  def _index(self) -> dict[str, int]:
    cached = self.__dict__.get("_index_cache")
    if cached is None:
      cached = {c: i + 2 for i, c in enumerate(self.chars)}
      object.__setattr__(self, "_index_cache", cached)
    return cached

  def to_json(self) -> list[str]:
    return list(self.chars)

  @classmethod
  def from_json(cls, chars: Sequence[str]) -> "CharVocab":
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
      raise ValueError("a character vocabulary is a list of single characters")
    return cls(tuple(chars))


def tags_of(length: int, entities: Sequence[dict]) -> np.ndarray:
  """int32[length] BIO tag ids of non-overlapping entities {"start", "end", "label"}."""
  tags = np.zeros((length,), np.int32)
  for e in entities:
    b = 1 + 2 * _LABEL_INDEX[e["label"]]
    if tags[e["start"]:e["end"]].any():
      raise ValueError(f"entity {e} overlaps another; BIO tags cannot hold overlapping spans")
    tags[e["start"]] = b
    tags[e["start"] + 1:e["end"]] = b + 1
  return tags


def spans_of(tags: Sequence[int]) -> list[dict]:
  """Entities {"start", "end", "label"} read off BIO tag ids, leniently.

  B-X starts an entity; I-X continues the open entity if it is an X, else starts one (a model
  may emit I without B); O closes it.
  """
  out: list[dict] = []
  open_label = None
  for i, t in enumerate(int(x) for x in tags):
    if t == 0:
      open_label = None
      continue
    label, inside = ENTITY_LABELS[(t - 1) // 2], (t - 1) % 2 == 1
    if inside and open_label == label:
      out[-1]["end"] = i + 1
    else:
      out.append({"start": i, "end": i + 1, "label": label})
      open_label = label
  return out


def relation_class(label: str) -> int:
  return _RELATION_INDEX[label]


def relation_label(cls_id: int) -> Optional[str]:
  return None if cls_id == 0 else RELATION_LABELS[cls_id - 1]


def _sentences(text: str) -> list[tuple[int, int]]:
  return cleaning.spans_ending_at(text, SENTENCE_ENDS)


def windows(text: str, max_chars: int, entities: Sequence[dict] = (),
            max_entities: Optional[int] = None) -> list[tuple[int, int]]:
  """[start, end) character windows covering `text`, cut at sentence ends (see module doc)."""
  pieces: list[tuple[int, int]] = []
  for s, e in _sentences(text):
    while e - s > max_chars:
      pieces.append((s, s + max_chars))
      s += max_chars
    pieces.append((s, e))
  starts = np.array(sorted(e["start"] for e in entities), np.int64)

  def n_entities(a: int, b: int) -> int:
    return int(np.searchsorted(starts, b) - np.searchsorted(starts, a))

  out: list[tuple[int, int]] = []
  for s, e in pieces:
    if out and e - out[-1][0] <= max_chars and (
        max_entities is None or n_entities(out[-1][0], e) <= max_entities):
      out[-1] = (out[-1][0], e)
    else:
      out.append((s, e))
  return out


@dataclasses.dataclass
class Batch:
  """Padded arrays of a set of windows (numpy)."""

  chars: np.ndarray  # int32[N, L]
  tags: np.ndarray  # int32[N, L]
  starts: np.ndarray  # int32[N, E]
  ends: np.ndarray  # int32[N, E] exclusive
  labels: np.ndarray  # int32[N, E]
  entity_mask: np.ndarray  # bool[N, E]
  relations: np.ndarray  # int32[N, E, E] class of (head, tail)

  def __len__(self) -> int:
    return self.chars.shape[0]

  def take(self, idx) -> "Batch":
    return Batch(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

  def lengths(self) -> np.ndarray:
    return (self.chars > 0).sum(axis=1)

  def cut(self, length: int) -> "Batch":
    """The batch with its character axis cut to `length` (which must hold every window)."""
    return dataclasses.replace(self, chars=self.chars[:, :length], tags=self.tags[:, :length])

  def as_dict(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def empty_batch(n: int, max_chars: int, max_entities: int) -> Batch:
  return Batch(chars=np.zeros((n, max_chars), np.int32), tags=np.zeros((n, max_chars), np.int32),
               starts=np.zeros((n, max_entities), np.int32),
               ends=np.ones((n, max_entities), np.int32),
               labels=np.zeros((n, max_entities), np.int32),
               entity_mask=np.zeros((n, max_entities), bool),
               relations=np.zeros((n, max_entities, max_entities), np.int32))


def set_entities(batch: Batch, row: int, entities: Sequence[dict]) -> None:
  """Writes entities {"start", "end", "label"} (window coordinates) into `batch` row `row`."""
  for j, e in enumerate(entities):
    batch.starts[row, j], batch.ends[row, j] = e["start"], e["end"]
    batch.labels[row, j] = _LABEL_INDEX[e["label"]]
    batch.entity_mask[row, j] = True


def training_windows(text: str, entities: Sequence[dict], relations: Sequence[dict],
                     max_chars: int, max_entities: int
                     ) -> tuple[list[tuple[str, list[dict], list[dict]]], int]:
  """A report's windows as (text, entities, relations) in window coordinates, and how many
  relations were lost because their ends fell in different windows."""
  out, kept = [], 0
  for a, b in windows(text, max_chars, entities, max_entities):
    inside = [i for i, e in enumerate(entities) if a <= e["start"] and e["end"] <= b]
    if len(inside) > max_entities:
      raise ValueError(f"a sentence holds {len(inside)} entities, more than max_entities="
                       f"{max_entities}; raise model.max_entities")
    new = {old: j for j, old in enumerate(inside)}
    ents = [{**entities[i], "start": entities[i]["start"] - a, "end": entities[i]["end"] - a}
            for i in inside]
    rels = [{**r, "head": new[r["head"]], "tail": new[r["tail"]]} for r in relations
            if r["head"] in new and r["tail"] in new]
    kept += len(rels)
    out.append((text[a:b], ents, rels))
  return out, len(relations) - kept


def encode_windows(items: Sequence[tuple[str, Sequence[dict], Sequence[dict]]], vocab: CharVocab,
                   max_chars: int, max_entities: int) -> Batch:
  """A Batch of (window text, entities, relations), entities in window coordinates."""
  batch = empty_batch(len(items), max_chars, max_entities)
  for row, (text, ents, rels) in enumerate(items):
    if len(text) > max_chars or len(ents) > max_entities:
      raise ValueError(f"window of {len(text)} chars / {len(ents)} entities exceeds "
                       f"{max_chars} / {max_entities}")
    batch.chars[row, :len(text)] = vocab.encode(text)
    batch.tags[row, :len(text)] = tags_of(len(text), ents)
    set_entities(batch, row, ents)
    for r in rels:
      batch.relations[row, r["head"], r["tail"]] = relation_class(r["label"])
  return batch


