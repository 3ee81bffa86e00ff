"""CN-RadGraph report graphs: the schema, and keyword labels and clinical pairs read off a graph.

A graph is a list of entities, each `{"start", "end", "label", "keyword"}` (character span into the
report, label in ENTITY_LABELS, keyword a Table 1 key or ""), and a list of relations, each
`{"head", "tail", "label"}` (indices into the entity list, label in RELATION_LABELS).

Direction follows RadGraph: located_at goes Observation -> Anatomy; modify goes from the modifier
to what it modifies (Observation -> Observation or Anatomy -> Anatomy). The observation that decides
whether something is diseased (DPO or DNO) is the outermost node: neutral observations (NO), such
as 纹理 in 两肺纹理增强, modify it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cnx2rg_jax.text import keywords as kw

ENTITY_LABELS = ("Anatomy", "DPO", "DNO", "NO")
RELATION_LABELS = ("located_at", "modify")

# How labels merge when a keyword is mentioned more than once: positive wins, then uncertain,
# then negated (the CheXpert labeler's rule).
_RANK = {kw.POSITIVE: 3, kw.UNCERTAIN: 2, kw.NEGATED: 1, kw.NOT_MENTIONED: 0}


def _merge(labels: np.ndarray, key: str, value: int) -> None:
  i = kw.KEYWORD_INDEX[key]
  if _RANK[value] > _RANK[int(labels[i])]:
    labels[i] = value


def _closure(start: int, modifiers: dict[int, list[int]]) -> list[int]:
  """`start` and every entity that modifies it, directly or through a chain of modify edges."""
  seen, stack = [start], [start]
  while stack:
    for m in modifiers.get(stack.pop(), ()):
      if m not in seen:
        seen.append(m)
        stack.append(m)
  return seen


def read_graph(entities: Sequence[dict], relations: Sequence[dict]
               ) -> tuple[np.ndarray, list[tuple[str, str]]]:
  """Keyword labels (int8[48], kw codes) and sorted positive (anatomy, lesion) pairs of a graph.

  Each DPO or DNO observation, with the observations that modify it, is a finding group; the
  anatomies it is located_at, with the anatomies that modify them, are its sites. A DPO group
  makes its lesion keywords and its sites' anatomy keywords positive and yields every (anatomy,
  lesion) pair; a DNO group marks them negated. Keywords of a group with no site are labelled
  without pairs; a DPO group with no lesion keyword labels nothing.
  """
  labels = np.full((kw.NUM_KEYWORDS,), kw.NOT_MENTIONED, np.int8)
  modifiers: dict[int, list[int]] = {}
  sites: dict[int, list[int]] = {}
  for r in relations:
    if r["label"] == "modify":
      modifiers.setdefault(r["tail"], []).append(r["head"])
    elif r["label"] == "located_at":
      sites.setdefault(r["head"], []).append(r["tail"])
    else:
      raise ValueError(f"unknown relation label {r['label']!r}; known: {RELATION_LABELS}")
  pairs = set()
  for i, e in enumerate(entities):
    if e["label"] not in ("DPO", "DNO"):
      continue
    status = kw.POSITIVE if e["label"] == "DPO" else kw.NEGATED
    lesions = [entities[j]["keyword"] for j in _closure(i, modifiers)
               if entities[j]["keyword"] and kw.keyword(entities[j]["keyword"]).kind == "lesion"]
    anatomies = [entities[a]["keyword"] for s in sites.get(i, ()) for a in _closure(s, modifiers)
                 if entities[a]["keyword"]]
    if status == kw.POSITIVE and not lesions:
      continue  # an abnormality outside the 48 keywords (e.g. 膈面低平) labels nothing
    for key in lesions + anatomies:
      _merge(labels, key, status)
    if status == kw.POSITIVE:
      pairs.update((a, l) for a in anatomies for l in lesions)
  return labels, sorted(pairs)


def span_keyword(span_text: str) -> str:
  """The Table 1 keyword an entity's span names: that of the lexicon terms in it when they all
  name one keyword, else "" (no term, or terms of several keywords)."""
  keys = {k for _, _, k in kw.find_terms(span_text)}
  return keys.pop() if len(keys) == 1 else ""
