"""Graph-based report augmentation: training reports rewritten so that they still say the same.

The CN-RadGraph graph of a report (`report_graph`) cuts it into *statements*. Clauses end at
，；：。; two clauses belong to one statement when an entity or a relation joins them (右侧气胸，
右侧胸腔外带透亮度增高，其内无肺纹理 is one statement, held together by located_at edges), and a
clause without entities (，边缘欠清) belongs to the statement before it in its sentence. Every
relation therefore stays inside one statement, and `read_graph` of the report is the merge
(positive > uncertain > negated per keyword, union of pairs) of the `read_graph`s of its
statements. Two rewrites follow, each leaving that merge as it is:

* Rephrasing. A statement is replaced by another statement of the training graphs that is
  *interchangeable* with it, and then each DNO phrase in it by an interchangeable DNO phrase.
* Reordering. The statements of one sentence are put in a random order when each stands on its
  own (below); the separators stay where they were, so the sentence still ends with its 。.
  Sentences themselves are left in place: moving them is the sentence shuffle's job.

Interchangeable ("same meaning"), precisely:

* Two statements are interchangeable when (1) their sub-graphs give the same `read_graph`
  output, keyword labels and positive pairs, not empty; (2) they name the same places: equal
  anatomy phrases up to spelling (`place_of`: 双 = 两, 心脏 = 心影, 侧, 野 and 所见 dropped,
  character order ignored, so 右上肺野 = 右肺上野 but 左侧肋膈角 != 两侧肋膈角), and equal
  place words (左 右 两 上 中 下, numbers) in the rest of the text, because keywords record
  neither side, zone nor rib number; (3) they state only normal or absent findings: they hold a
  DNO entity and no DPO one. A positive finding's phrase carries what the graph does not (条索影
  and 片状影 are both `shadow`, 少量积液 and 大量积液 both `effusion`), so positive statements
  are moved, never rephrased. A statement must also stand on its own: it begins with an entity,
  after at most side words (右侧气胸), so that it reads well anywhere in its sentence.
* Two DNO phrases are interchangeable when they have the same keyword, the same place words, and
  the same relations to the same kinds of neighbours (label, keyword, before or after), at least
  one: 未见异常 and 未见明显异常 said of 骨性胸廓 or 所见骨质 (located_at a `bone` anatomy).

Keeping the label, keyword and relations of every node, or swapping in a sub-graph with the same
`read_graph` output, leaves the report's `read_graph` output unchanged by construction; the
place rules keep the report true of its image. Phrasings come from the training split's graphs
(`PhraseBank`), each seen at least MIN_PHRASE_COUNT times, and a statement enters the bank only
if the rule labeler reads its text as its graph says. Finally `augment` checks the result with
the rule labeler (`text.labeler.label_report`): a rewrite whose keyword labels or positive
pairs differ from the original's is dropped and the original returned. A report without a
graph, or whose graph's spans do not survive cleaning (`alignment.align_graph`), is left as it is.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re
from typing import Iterable, Optional, Protocol, Sequence

import numpy as np

from cnx2rg_jax.text import labeler
from cnx2rg_jax.text import cleaning
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.text.alignment import Graph, align_graph, graph_fits

CLAUSE_ENDS = "，；：。"
SENTENCE_END = "。"
# A phrasing seen fewer times in the training graphs is never swapped in: a one-off is more
# likely a slip or a private habit than the way reports are written.
MIN_PHRASE_COUNT = 2
# Words that say where: side, zone, and numbers (第5肋).
_PLACE_WORD = re.compile(r"\d+|[左右两上中下]")
# Spellings of one place: 双 and 两 both mean "both"; 侧 (side), 野 (field) and 所见 (visible)
# add nothing; 心脏 and 心影 both name the heart on a radiograph.
_PLACE_SPELLINGS = (("双", "两"), ("心脏", "心影"), ("所见", ""), ("侧", ""), ("野", ""))
# What may come before a statement's first entity for it to stand on its own (右侧 of 右侧气胸).
_FREE_LEAD = re.compile("[左右两双侧]*")


@dataclasses.dataclass(frozen=True)
class Fragment:
  """A statement's text, without its closing separator, and its sub-graph (spans into `text`)."""

  text: str
  entities: tuple
  relations: tuple


class SplitGraphs(Protocol):
  """What `PhraseBank.from_split` reads of a split: `dataset.SplitTexts` is one (graph_augment
  sits below dataset, which builds its graphs with `record_graph`)."""

  reports: list  # cleaned
  graphs: list  # per report: (entities, relations) with spans into it, or None


@dataclasses.dataclass(frozen=True)
class PhraseBank:
  """Interchangeable phrasings seen in the training graphs. Picklable (grain workers get a copy).

  `statements` maps a statement key (`statement_key`) to the normal statements with that key;
  `phrases` maps a DNO phrase key (`phrase_key`) to the DNO phrases with that key.
  """

  statements: dict = dataclasses.field(default_factory=dict)
  phrases: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_graphs(cls, examples: Iterable[tuple[str, Optional[Sequence], Optional[Sequence]]],
                  min_count: int = MIN_PHRASE_COUNT) -> "PhraseBank":
    """The bank of (cleaned report, entities, relations) examples; a graph of None is skipped."""
    statement_counts: collections.Counter = collections.Counter()
    phrase_counts: collections.Counter = collections.Counter()
    fragments = {}
    for report, entities, relations in examples:
      statements = split_statements(report, entities, relations) if entities is not None else None
      for fragment, _ in statements or ():
        key = statement_key(fragment)
        if key is not None:
          statement_counts[key, fragment.text] += 1
          fragments.setdefault((key, fragment.text), fragment)
        for i, e in enumerate(fragment.entities):
          key = phrase_key(fragment, i)
          if key is not None:
            phrase_counts[key, fragment.text[e["start"]:e["end"]]] += 1
    statements, phrases = collections.defaultdict(list), collections.defaultdict(list)
    for (key, text), n in sorted(statement_counts.items(), key=lambda kv: kv[0][1]):
      if n >= min_count and _reads_as_its_graph(fragments[key, text]):
        statements[key].append(fragments[key, text])
    for (key, text), n in sorted(phrase_counts.items(), key=lambda kv: kv[0][1]):
      if n >= min_count:
        phrases[key].append(text)
    return cls({k: tuple(v) for k, v in statements.items()},
               {k: tuple(v) for k, v in phrases.items()})

  @classmethod
  def from_split(cls, texts: SplitGraphs, min_count: int = MIN_PHRASE_COUNT) -> "PhraseBank":
    """The bank of a split's cleaned reports and graphs (`dataset.read_split_texts`)."""
    return cls.from_graphs(((r, *(g or (None, None))) for r, g in zip(texts.reports, texts.graphs)),
                           min_count)


def place_of(anatomy: str) -> tuple[str, ...]:
  """The place an anatomy phrase names, the same for its spellings (see the module docstring)."""
  for spelling, canonical in _PLACE_SPELLINGS:
    anatomy = anatomy.replace(spelling, canonical)
  return tuple(sorted(re.findall(r"\d+|\D", anatomy)))


def _place_words(text: str) -> tuple[str, ...]:
  return tuple(sorted(_PLACE_WORD.findall(text.replace("双", "两"))))


def _labels_and_pairs(entities: Sequence[dict], relations: Sequence[dict]) -> tuple:
  """read_graph's output as a key: ((keyword, label) of the mentioned keywords, pairs)."""
  labels, pairs = report_graph.read_graph(entities, relations)
  mentioned = np.flatnonzero(labels != kw.NOT_MENTIONED)
  return tuple((kw.KEYWORD_KEYS[i], int(labels[i])) for i in mentioned), tuple(pairs)


def statement_key(fragment: Fragment) -> Optional[tuple]:
  """What a normal statement means (labels and pairs, places), or None if it is not one that
  may be rephrased: no DNO entity, a DPO entity, nothing labelled, or not standing on its own."""
  entities = fragment.entities
  kinds = {e["label"] for e in entities}
  if "DNO" not in kinds or "DPO" in kinds or SENTENCE_END in fragment.text:
    return None
  if not _stands_alone(fragment):
    return None
  meaning = _labels_and_pairs(entities, fragment.relations)
  if not meaning[0]:
    return None
  anatomy = [e for e in entities if e["label"] == "Anatomy"]
  rest = fragment.text
  for e in sorted(anatomy, key=lambda e: -e["start"]):
    rest = rest[:e["start"]] + rest[e["end"]:]
  places = tuple(sorted(place_of(fragment.text[e["start"]:e["end"]]) for e in anatomy))
  return meaning, places, _place_words(rest)


def phrase_key(fragment: Fragment, i: int) -> Optional[tuple]:
  """What DNO entity `i` of a fragment means in its place (keyword, place words, its relations
  to kinds of neighbours), or None if it is no DNO, overlaps another entity or has no relation."""
  e = fragment.entities[i]
  phrase = fragment.text[e["start"]:e["end"]]
  if e["label"] != "DNO" or any(c in CLAUSE_ENDS for c in phrase):
    return None
  if any(j != i and o["start"] < e["end"] and e["start"] < o["end"]
         for j, o in enumerate(fragment.entities)):
    return None
  context = []
  for r in fragment.relations:
    if i in (r["head"], r["tail"]):
      other = fragment.entities[r["tail"] if r["head"] == i else r["head"]]
      context.append((r["head"] == i, r["label"], other["label"], other["keyword"],
                      other["start"] < e["start"]))
  if not context:
    return None
  return e["keyword"], _place_words(phrase), tuple(sorted(context))


def _stands_alone(fragment: Fragment) -> bool:
  if not fragment.entities:
    return False
  first = min(e["start"] for e in fragment.entities)
  return _FREE_LEAD.fullmatch(fragment.text[:first]) is not None


def _reads_as_its_graph(fragment: Fragment) -> bool:
  labels, pairs = _labels_and_pairs(fragment.entities, fragment.relations)
  read = labeler.label_report(fragment.text)
  return read.keywords == dict(labels) and tuple(map(tuple, read.pairs)) == pairs


def split_statements(report: str, entities: Sequence[dict], relations: Sequence[dict]
                     ) -> Optional[list[tuple[Fragment, str]]]:
  """The report's statements in order, each (fragment, closing separator or ""); their texts and
  separators concatenate to `report`. None when the graph does not fit the report."""
  if not graph_fits(report, entities, relations):
    return None
  clauses = cleaning.spans_ending_at(report, CLAUSE_ENDS)
  ends = [b for _, b in clauses]
  clause_of = lambda pos: bisect.bisect_right(ends, pos)  # noqa: E731
  joined = [False] * len(clauses)  # joined[k]: clauses k and k + 1 are one statement
  placed = [False] * len(clauses)  # the clause holds an entity, or joined one that does

  def join(a: int, b: int) -> None:
    for k in range(min(a, b), max(a, b)):
      joined[k] = True

  for e in entities:
    a, b = clause_of(e["start"]), clause_of(e["end"] - 1)
    join(a, b)
    placed[a:b + 1] = [True] * (b + 1 - a)
  for r in relations:
    join(clause_of(entities[r["head"]]["start"]), clause_of(entities[r["tail"]]["start"]))
  # A clause without entities goes with its neighbour in the sentence, the one before first.
  open_ended = [report[b - 1] != SENTENCE_END for _, b in clauses]  # the sentence goes on
  for k in range(1, len(clauses)):
    if not placed[k] and open_ended[k - 1] and placed[k - 1]:
      joined[k - 1] = placed[k] = True
  for k in range(len(clauses) - 2, -1, -1):
    if not placed[k] and open_ended[k] and placed[k + 1]:
      joined[k] = placed[k] = True
  statements, first = [], 0
  for k in range(len(clauses)):
    if k == len(clauses) - 1 or not joined[k]:
      statements.append(_fragment(report, clauses[first][0], clauses[k][1], entities, relations))
      first = k + 1
  return statements


def _fragment(report: str, a: int, b: int, entities, relations) -> tuple[Fragment, str]:
  inside = [i for i, e in enumerate(entities) if a <= e["start"] < b]
  local = {g: i for i, g in enumerate(inside)}
  cut = b - 1 if report[b - 1] in CLAUSE_ENDS and all(
      entities[i]["end"] < b for i in inside) else b
  ents = tuple({**entities[i], "start": entities[i]["start"] - a, "end": entities[i]["end"] - a}
               for i in inside)
  rels = tuple({**r, "head": local[r["head"]], "tail": local[r["tail"]]}
               for r in relations if r["head"] in local)
  return Fragment(report[a:cut], ents, rels), report[cut:b]


def _replace(fragment: Fragment, i: int, phrase: str) -> Fragment:
  """`fragment` with entity i's span (which overlaps no other) replaced by `phrase`."""
  e = fragment.entities[i]
  shift = len(phrase) - (e["end"] - e["start"])
  entities = tuple({**o, "end": e["start"] + len(phrase)} if j == i else
                   {**o, "start": o["start"] + shift, "end": o["end"] + shift}
                   if o["start"] >= e["end"] else o for j, o in enumerate(fragment.entities))
  text = fragment.text[:e["start"]] + phrase + fragment.text[e["end"]:]
  return Fragment(text, entities, fragment.relations)


def _pick(options: Sequence, rng: np.random.Generator):
  return options[int(rng.integers(len(options)))]


def _rephrase(fragment: Fragment, bank: PhraseBank, rng: np.random.Generator) -> Fragment:
  """A statement drawn among those interchangeable with `fragment` (itself included), then each
  of its DNO phrases drawn among the interchangeable ones."""
  key = statement_key(fragment)
  if key is not None:
    fragment = _pick([fragment] + [f for f in bank.statements.get(key, ())
                                   if f.text != fragment.text], rng)
  for i in range(len(fragment.entities)):
    key = phrase_key(fragment, i)
    if key is not None:
      e = fragment.entities[i]
      phrase = fragment.text[e["start"]:e["end"]]
      fragment = _replace(fragment, i, _pick(
          [phrase] + [p for p in bank.phrases.get(key, ()) if p != phrase], rng))
  return fragment


def _reorder(statements: list[tuple[Fragment, str]], rng: np.random.Generator
             ) -> list[tuple[Fragment, str]]:
  """The statements of each sentence in a random order when all of them stand alone."""
  out, sentence = [], []
  for fragment, separator in statements:
    sentence.append((fragment, separator))
    if separator == SENTENCE_END or len(out) + len(sentence) == len(statements):
      if len(sentence) > 1 and all(_stands_alone(f) and SENTENCE_END not in f.text
                                   for f, _ in sentence):
        order = rng.permutation(len(sentence))
        sentence = [(sentence[j][0], s) for j, (_, s) in zip(order, sentence)]
      out += sentence
      sentence = []
  return out


def _assemble(statements: list[tuple[Fragment, str]]) -> tuple[str, list, list]:
  text, entities, relations = "", [], []
  for fragment, separator in statements:
    base = len(entities)
    entities += [{**e, "start": e["start"] + len(text), "end": e["end"] + len(text)}
                 for e in fragment.entities]
    relations += [{**r, "head": r["head"] + base, "tail": r["tail"] + base}
                  for r in fragment.relations]
    text += fragment.text + separator
  return text, entities, relations


def _same_labels(a: str, b: str) -> bool:
  la, lb = labeler.label_report(a), labeler.label_report(b)
  return la.keywords == lb.keywords and la.pairs == lb.pairs


def augment_graph(report: str, entities: Optional[Sequence[dict]],
                  relations: Optional[Sequence[dict]], bank: PhraseBank,
                  rng: np.random.Generator, probability: float = 1.0,
                  check_labels: bool = True) -> tuple[str, list, list]:
  """(report, entities, relations) rewritten with `probability`, else as given.

  `report` is cleaned and the graph's spans index it; a graph of None (no graph) leaves the
  report as it is, and so does probability 0, without drawing from `rng`. The result's
  `read_graph` output equals the original's; with `check_labels`, so does its rule-labeler
  output (a rewrite that fails this is dropped). Deterministic given the rng state.
  """
  unchanged = report, list(entities or ()), list(relations or ())
  if entities is None or probability <= 0 or rng.random() >= probability:
    return unchanged
  statements = split_statements(report, entities, relations or ())
  if not statements:
    return unchanged
  statements = _reorder([(_rephrase(f, bank, rng), s) for f, s in statements], rng)
  text, new_entities, new_relations = _assemble(statements)
  if text != report and check_labels and not _same_labels(report, text):
    return unchanged
  return text, new_entities, new_relations


def augment(report: str, entities: Optional[Sequence[dict]], relations: Optional[Sequence[dict]],
            bank: PhraseBank, rng: np.random.Generator, probability: float = 1.0,
            check_labels: bool = True) -> str:
  """The report text of `augment_graph`."""
  return augment_graph(report, entities, relations, bank, rng, probability, check_labels)[0]


# --- graphs of TFDS records -------------------------------------------------------------------

def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _label(value, names: Sequence[str]) -> str:
  return _text(value) if isinstance(value, (str, bytes)) else names[int(value)]


def record_graph(record: dict, report: str) -> Optional[Graph]:
  """A cncxr record's graph with spans into `report`, the record's cleaned report text; None
  when the record has no graph or its spans do not survive cleaning (`align_graph`)."""
  if not bool(record["has_graph"]):
    return None
  ents, rels = record["entities"], record["relations"]
  entities = [{"start": int(s), "end": int(e), "label": _label(l, report_graph.ENTITY_LABELS),
               "keyword": _text(k)}
              for s, e, l, k in zip(ents["start"], ents["end"], ents["label"], ents["keyword"])]
  relations = [{"head": int(h), "tail": int(t), "label": _label(l, report_graph.RELATION_LABELS)}
               for h, t, l in zip(rels["head"], rels["tail"], rels["label"])]
  return align_graph(_text(record["report"]), report, entities, relations)
