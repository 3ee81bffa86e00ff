"""A CN-RadGraph graph made from the rule labeler's reading of a report.

A release whose annotation gives no graph gets one at build time (tfds_cncxr/annotate.py) from
`graph_of(label_report(report))`, so that the paper's graph-based augmentation has graphs to work
on, as the paper's own CN-RadGraph output gave it. The graph says what the labeler read:

* every anatomy mention is an Anatomy entity;
* a positive lesion mention is a DPO entity located_at each anatomy the labeler attached it to;
  a negated one is a DNO entity located_at those anatomies;
* an anatomy that a normal verdict negates (心影不大, 两侧肋膈角锐利) gets a DNO entity over the
  verdict's words (the clause's text after its last mention) located_at it and at the anatomies
  coordinated with it;
* an uncertain lesion is a neutral (NO) entity with no relation: CN-RadGraph has no uncertain
  observation, so the graph leaves hedged findings out (the build's keyword labels keep them).

A lesion whose site only its name implies (气胸 -> chest) is located_at the nearest mention of
that organ anywhere in the report (左侧气胸，左侧胸腔外带…), or at nothing when there is none. So
`report_graph.read_graph` of the graph gives the labeler's positive and negated keywords and its
pairs, except a pair whose implied organ the report never names: a graph locates an observation
at a span.
Spans index `labels.text`, the cleaned report.
"""

from __future__ import annotations

from cnx2rg_jax.text.labeler import Mention, ReportLabels
from cnx2rg_jax.text import keywords as kw

# Characters that end a clause for a verdict's span (the labeler's clause and sentence ends).
_CLAUSE_ENDS = frozenset("，；：。,;:")
_STRIP = " \t\n、及和与以"


def _clause_end(text: str, start: int) -> int:
  end = start
  while end < len(text) and text[end] not in _CLAUSE_ENDS:
    end += 1
  return end


def _verdict_span(text: str, anatomy: Mention, mentions: list[Mention]) -> tuple[int, int] | None:
  """The words after the last mention of `anatomy`'s clause, up to the clause's end; None when
  there are none (the verdict then came before the anatomy, e.g. 未见心影增大)."""
  end = _clause_end(text, anatomy.end)
  last = max([m.end for m in mentions if anatomy.start <= m.start < end], default=anatomy.end)
  start = last
  while start < end and text[start] in _STRIP:
    start += 1
  while end > start and text[end - 1] in _STRIP:
    end -= 1
  return (start, end) if end > start else None


def _implied_site(lesion: Mention, mentions: list[Mention]) -> list[Mention]:
  """The mention of the organ a lesion's name implies (气胸 -> chest) nearest to it, if the
  report names that organ anywhere (左侧气胸，左侧胸腔外带透亮度增高: the 胸腔 of the next clause)."""
  organ = [m for m in mentions if m.kind == "anatomy" and m.key == lesion.anatomy[0]]
  return sorted(organ, key=lambda m: abs(m.start - lesion.start))[:1]


def graph_of(labels: ReportLabels) -> tuple[list[dict], list[dict]]:
  """(entities, relations) of the labeler's reading (see the module doc); entity dicts have
  start, end, label, keyword; relation dicts head, tail, label (indices into entities)."""
  mentions = sorted(labels.mentions, key=lambda m: (m.start, m.end))
  index = {id(m): i for i, m in enumerate(mentions)}
  entities, relations = [], []
  attached = set()
  for m in mentions:
    if m.kind == "anatomy":
      label = "Anatomy"
    elif m.status == kw.POSITIVE:
      label = "DPO"
    elif m.status == kw.NEGATED:
      label = "DNO"
    else:
      label = "NO"
    entities.append({"start": m.start, "end": m.end, "label": label, "keyword": m.key})
  for m in mentions:
    if m.kind == "lesion" and entities[index[id(m)]]["label"] in ("DPO", "DNO"):
      sites = m.sites or (_implied_site(m, mentions) if m.implied else [])
      for site in sites:
        relations.append({"head": index[id(m)], "tail": index[id(site)], "label": "located_at"})
        attached.add(id(site))
  verdicts: dict[tuple[int, int], int] = {}
  for m in mentions:
    if m.kind != "anatomy" or m.status != kw.NEGATED or id(m) in attached:
      continue
    span = _verdict_span(labels.text, m, mentions)
    if span is None:
      continue
    if span not in verdicts:
      verdicts[span] = len(entities)
      entities.append({"start": span[0], "end": span[1], "label": "DNO", "keyword": ""})
    relations.append({"head": verdicts[span], "tail": index[id(m)], "label": "located_at"})
  return _in_text_order(entities, relations)


def _in_text_order(entities: list[dict], relations: list[dict]) -> tuple[list[dict], list[dict]]:
  order = sorted(range(len(entities)), key=lambda i: (entities[i]["start"], entities[i]["end"]))
  new = {old: i for i, old in enumerate(order)}
  return ([entities[i] for i in order],
          [{**r, "head": new[r["head"]], "tail": new[r["tail"]]} for r in relations])
