"""Keyword labels and report graphs made at build time for release entries that lack them.

The paper made its keyword labels (Table 1) and report graphs itself, with CN-RadGraph over all
of CN-CXR's reports; a plain release folder (reports and images) has neither. A release build
therefore annotates every entry whose annotation gives no `keywords` and/or no `entities`:

* "labeler": the rule labeler (cnx2rg_jax/text/labeler.py) gives the 48 labels
  (1/0/-1, -2 for not mentioned) and its reading as a graph (labeler_graph.graph_of);
* "cn_radgraph": a trained CN-RadGraph extractor gives the graph, and the labels are read off it
  (positive and negated only: its schema has no uncertain observation);
* "none": nothing is made (an entry without labels is stored as unlabelled).

Labels and graphs given in the annotation always win, each on its own. An annotator reads
Chinese only: an English release is never annotated. Made graphs are stored with spans into the
report as written (the annotators read the cleaned report; `raw_spans` maps the spans back).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Optional, Protocol, Sequence

import numpy as np

from cnx2rg_jax.text import alignment, labeler, labeler_graph
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.text.cleaning import clean_report

ANNOTATORS = ("labeler", "cn_radgraph", "none")
# Where a stored example's labels and graph came from (the build's metadata counts them).
GIVEN, MADE, NONE = "given", "made", "none"
CN_RADGRAPH_MODEL_DIR = "model"  # radgraph.extractor keeps its model in WORKDIR/model

Graph = tuple[list[dict], list[dict]]


@dataclasses.dataclass(frozen=True)
class Annotation:
  keyword_labels: np.ndarray  # int8[48], keywords.py codes
  graph: Optional[Graph]  # spans into the report as written; None when none could be made


class Annotator(Protocol):
  name: str  # one of ANNOTATORS

  def annotate(self, reports: Sequence[str]) -> list[Annotation]:
    """The labels and graph of each report (as written in the annotation file)."""


def raw_spans(raw: str, cleaned: str, entities: list[dict]) -> Optional[list[dict]]:
  """`entities` with spans into `cleaned` (= clean_report(raw)) moved onto `raw`; None when a
  span's characters are not all kept, in order, by the cleaning."""
  if raw == cleaned:
    return [dict(e) for e in entities]
  to_raw = alignment.kept_characters(cleaned, raw)
  out = []
  for e in entities:
    kept = [to_raw.get(i) for i in range(e["start"], e["end"])]
    if None in kept or kept != sorted(kept):
      return None
    out.append({**e, "start": kept[0], "end": kept[-1] + 1})
  return out


def _stored_graph(raw: str, cleaned: str, graph: Graph) -> Optional[Graph]:
  """The graph with spans into `raw`, checked to move back onto `cleaned` exactly as it came
  (what the pipeline does with a stored graph, alignment.align_graph); else None."""
  entities, relations = graph
  moved = raw_spans(raw, cleaned, entities)
  if moved is None:
    return None
  moved = [{**e, "text": raw[e["start"]:e["end"]]} for e in moved]
  back = alignment.align_graph(raw, cleaned, [dict(e) for e in moved], relations)
  if back is None or [(e["start"], e["end"]) for e in back[0]] != [
      (e["start"], e["end"]) for e in entities]:
    return None
  return moved, relations


class RuleAnnotator:
  """The rule labeler's labels and its reading as a graph."""

  name = "labeler"

  def annotate(self, reports: Sequence[str]) -> list[Annotation]:
    out = []
    for raw in reports:
      read = labeler.label_report(raw)
      labels = np.full((kw.NUM_KEYWORDS,), kw.NOT_MENTIONED, np.int8)
      for key, value in read.keywords.items():
        labels[kw.KEYWORD_INDEX[key]] = value
      out.append(Annotation(labels, _stored_graph(raw, read.text, labeler_graph.graph_of(read))))
    return out


class GraphAnnotator:
  """A CN-RadGraph extractor's graphs, with the labels read off them.

  `extract(cleaned_reports) -> [(entities, relations)]` is `radgraph.extractor.Extractor.extract`
  (spans into the cleaned text)."""

  name = "cn_radgraph"

  def __init__(self, extract, fingerprint: str):
    self._extract = extract
    self.fingerprint = fingerprint

  def annotate(self, reports: Sequence[str]) -> list[Annotation]:
    cleaned = [clean_report(r) for r in reports]
    out = []
    for raw, text, graph in zip(reports, cleaned, self._extract(cleaned)):
      labels, _ = report_graph.read_graph(*graph)
      out.append(Annotation(labels, _stored_graph(raw, text, graph)))
    return out


def model_fingerprint(cn_radgraph_dir: str) -> str:
  """A sha256 over the files of a trained CN-RadGraph's model folder (names and bytes), so that
  another model makes another build. FileNotFoundError when the folder holds no model."""
  folder = pathlib.Path(cn_radgraph_dir).expanduser() / CN_RADGRAPH_MODEL_DIR
  files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
  if not files:
    raise FileNotFoundError(f"data.cn_radgraph_dir={str(cn_radgraph_dir)!r} holds no trained "
                            f"CN-RadGraph ({str(folder)!r} is missing or empty); train one with "
                            "`python launch.py --config=configs/cn_radgraph.py --workdir=DIR`")
  digest = hashlib.sha256()
  for p in files:
    digest.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
  return digest.hexdigest()


def annotate_entries(entries: Sequence, annotator: Optional[Annotator]) -> list:
  """ReleaseEntry objects with made labels and graphs where the annotation gave none, each
  carrying `label_source` and `graph_source` (GIVEN, MADE or NONE)."""
  need = [i for i, e in enumerate(entries) if e.keyword_labels is None or e.entities is None]
  made = dict(zip(need, annotator.annotate([entries[i].report for i in need]))) if (
      annotator is not None and need) else {}
  out = []
  for i, e in enumerate(entries):
    a = made.get(i)
    labels, label_source = e.keyword_labels, GIVEN
    if labels is None:
      labels, label_source = (a.keyword_labels, MADE) if a is not None else (None, NONE)
    entities, relations, graph_source = e.entities, e.relations, GIVEN
    if entities is None:
      if a is not None and a.graph is not None:
        (entities, relations), graph_source = a.graph, MADE
      else:
        graph_source = NONE
    out.append(dataclasses.replace(e, keyword_labels=labels, entities=entities,
                                   relations=relations, label_source=label_source,
                                   graph_source=graph_source))
  return out


def empty_counts() -> dict:
  return {f"{what}_{source}": 0 for what in ("labels", "graphs") for source in (GIVEN, MADE, NONE)}
