"""Entity and relation precision, recall and F1 of extracted graphs (micro-averaged).

As in RadGraph's evaluation: an entity is right when its character span and its label both match
a gold entity; a relation is right when its label matches and both of its entities are right
(span and label). Counts are summed over all reports before dividing; the 0/0 conventions are
those of the clinical metric (`text.pair_scores.prf`): a 0/0 ratio is 0, except that with no
gold and no predicted items at all every figure is None (nothing to score).
"""

from __future__ import annotations

from typing import Sequence

from cnx2rg_jax.text.pair_scores import prf

Graph = tuple[Sequence[dict], Sequence[dict]]  # (entities, relations)


def entity_set(entities: Sequence[dict]) -> set[tuple[int, int, str]]:
  return {(int(e["start"]), int(e["end"]), str(e["label"])) for e in entities}


def relation_set(entities: Sequence[dict], relations: Sequence[dict]) -> set[tuple]:
  key = [(int(e["start"]), int(e["end"]), str(e["label"])) for e in entities]
  return {(key[r["head"]], key[r["tail"]], str(r["label"])) for r in relations}


def _prf(tp: int, fp: int, fn: int, prefix: str) -> dict:
  """prf's figures (the clinical metric's 0/0 conventions) and the counts, keys prefixed."""
  out = {f"{prefix}_{k}": v for k, v in prf(tp, fp, fn).items()}
  return {**out, f"{prefix}_tp": tp, f"{prefix}_fp": fp, f"{prefix}_fn": fn}


def graph_scores(predicted: Sequence[Graph], gold: Sequence[Graph]) -> dict:
  """{entity,relation}_{precision,recall,f1,tp,fp,fn}, plus the same per entity label and per
  relation label under "per_label"."""
  if len(predicted) != len(gold):
    raise ValueError(f"{len(predicted)} predicted graphs but {len(gold)} gold graphs")
  counts: dict[tuple[str, str], list[int]] = {}

  def add(kind: str, pred: set, ref: set, label_of) -> None:
    for which, items in ((0, pred & ref), (1, pred - ref), (2, ref - pred)):
      for item in items:
        for key in ((kind, ""), (kind, label_of(item))):
          counts.setdefault(key, [0, 0, 0])[which] += 1

  for (p_ents, p_rels), (g_ents, g_rels) in zip(predicted, gold):
    add("entity", entity_set(p_ents), entity_set(g_ents), lambda x: x[2])
    add("relation", relation_set(p_ents, p_rels), relation_set(g_ents, g_rels), lambda x: x[2])
  out: dict = {}
  for kind in ("entity", "relation"):
    out.update(_prf(*counts.get((kind, ""), (0, 0, 0)), kind))
  out["per_label"] = {label: _prf(*c, kind) for (kind, label), c in sorted(counts.items())
                      if label}
  out["num_reports"] = len(gold)
  return out
