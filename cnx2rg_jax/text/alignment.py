"""Report graphs moved between a report as written and its cleaned text.

`clean_report` deletes characters (whitespace, list numbers) and maps others one for one
(full-width digits, ASCII punctuation), so a graph's character spans (`report_graph`'s schema)
into one text are moved onto the other through the characters that cleaning keeps
(`kept_characters`). The input pipeline moves a stored graph onto the cleaned report it trains
on (`align_graph`, through `data.graph_augment.record_graph`); a release build that makes a graph
on the cleaned report moves it back onto the report as written (`tfds_cncxr.annotate`).
"""

from __future__ import annotations

import difflib
from typing import Optional, Sequence

from cnx2rg_jax.text import report_graph

Graph = tuple[list, list]  # (entities, relations) in the report_graph schema


def graph_fits(report: str, entities: Sequence[dict], relations: Sequence[dict]) -> bool:
  """Whether every entity span lies in `report` and every label and relation end is valid."""
  n = len(entities)
  return (all(0 <= e["start"] < e["end"] <= len(report)
              and e["label"] in report_graph.ENTITY_LABELS for e in entities)
          and all(0 <= r["head"] < n and 0 <= r["tail"] < n
                  and r["label"] in report_graph.RELATION_LABELS for r in relations))


def kept_characters(src: str, dst: str) -> dict[int, int]:
  """{index in src: index in dst} of the characters that cleaning keeps or maps one for one
  (dst = clean_report(src), or the other way round)."""
  moved = {}
  matcher = difflib.SequenceMatcher(None, src, dst, autojunk=False)
  for tag, i1, i2, j1, j2 in matcher.get_opcodes():
    if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
      moved.update((i1 + k, j1 + k) for k in range(i2 - i1))
  return moved


def align_graph(raw: str, cleaned: str, entities: list, relations: list) -> Optional[Graph]:
  """The graph of `raw` with its spans moved onto `cleaned` (= clean_report(raw)).

  Cleaning deletes characters (whitespace, list numbers) and maps others one for one (full-width
  digits, ASCII punctuation); a span moves when its kept characters stay contiguous. None when a
  span does not, or the graph does not fit the text.
  """
  if not graph_fits(raw, entities, relations):
    return None
  if raw != cleaned:
    moved = kept_characters(raw, cleaned)
    aligned = []
    for e in entities:
      kept = [moved.get(i) for i in range(e["start"], e["end"]) if not raw[i].isspace()]
      if not kept or None in kept or kept != list(range(kept[0], kept[-1] + 1)):
        return None
      aligned.append({**e, "start": kept[0], "end": kept[-1] + 1})
    entities = aligned
  if not graph_fits(cleaned, entities, relations):
    return None
  return entities, relations
