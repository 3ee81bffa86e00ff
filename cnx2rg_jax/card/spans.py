"""What the card highlights in a report: the labeler's mention spans, each with a colour class,
and the characters of each generated token (the words a click shows attention for).

Spans come from `text.labeler.label_report`: `ReportLabels.mentions` carry (start, end)
into `ReportLabels.text`, the cleaned report, which is what the card displays. Classes:

  lesion, positive:  "match"    every (anatomy, lesion) pair it yields is in the other report's
                                pairs (reference vs generated);
                     "partial"  some of them are;
                     "miss"     (reference) none is: the generated report misses it;
                     "false"    (generated) none is: a false finding;
                     "found"    (a prediction without reference) a positive finding;
                     "unscored" positive, but attached to no anatomy: it yields no pair;
  any, negated:      "negated";  uncertain: "uncertain";
  anatomy otherwise: "anatomy".
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Optional, Sequence

from cnx2rg_jax.text.labeler import Mention, ReportLabels
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import tokenizer as tok

Pair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Span:
  """One highlighted mention: characters [start, end) of the displayed (cleaned) text."""

  start: int
  end: int
  key: str
  kind: str  # "anatomy" | "lesion"
  status: Optional[int]  # keywords.POSITIVE / NEGATED / UNCERTAIN, or None
  cls: str  # see the module docstring
  pairs: tuple[Pair, ...] = ()


def mention_pairs(m: Mention) -> set[Pair]:
  """The positive (anatomy, lesion) pairs one mention yields (as `label_report` counts them)."""
  if m.kind == "lesion" and m.status == kw.POSITIVE:
    return {(a, m.key) for a in m.anatomy}
  return set()


def _cls(m: Mention, other: Optional[set[Pair]], side: str) -> str:
  if m.status == kw.UNCERTAIN:
    return "uncertain"
  if m.status == kw.NEGATED:
    return "negated"
  if m.kind != "lesion" or m.status != kw.POSITIVE:
    return "anatomy"
  mine = mention_pairs(m)
  if not mine:
    return "unscored"
  if other is None:
    return "found"
  hit = mine & other
  if hit == mine:
    return "match"
  if hit:
    return "partial"
  return "miss" if side == "reference" else "false"


def highlight(labels: ReportLabels, other_pairs: Optional[Iterable[Pair]], side: str
              ) -> list[Span]:
  """The spans of `labels.mentions`, coloured against `other_pairs` (the other report's positive
  pairs; None for a prediction without reference). `side`: "reference" or "generated"."""
  if side not in ("reference", "generated"):
    raise ValueError(f"side must be 'reference' or 'generated', got {side!r}")
  other = None if other_pairs is None else {tuple(p) for p in other_pairs}
  return [Span(m.start, m.end, m.key, m.kind, m.status, _cls(m, other, side),
               tuple(sorted(mention_pairs(m))))
          for m in sorted(labels.mentions, key=lambda m: m.start)]


def offset_map(src: str, dst: str) -> list[int]:
  """For every offset 0..len(src) of `src`, the corresponding offset of `dst` (equal texts: the
  identity; otherwise aligned by difflib, deleted characters mapping to where they were)."""
  if src == dst:
    return list(range(len(src) + 1))
  out = [0] * (len(src) + 1)
  for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, src, dst, autojunk=False).get_opcodes():
    for i in range(a0, a1 + 1):
      out[i] = b0 + min(i - a0, b1 - b0) if op in ("equal", "replace") else b0
  out[len(src)] = len(dst)
  return out


def token_spans(tokenizer: Any, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
  """[start, end) in `text` (the displayed, cleaned report) of each content token of `ids` (the
  generated ids after bos, up to eos), in order; a token that adds no characters of its own (a
  byte piece of a longer character) gets an empty span at the end of the text so far."""
  content = list(tok.content_ids(ids))
  decoded = tokenizer.decode(content)
  to_text = offset_map(decoded, text)
  spans, prev = [], ""
  for k in range(1, len(content) + 1):
    cur = tokenizer.decode(content[:k])
    start = len(prev) if cur.startswith(prev) else len(cur)
    # Decoding a prefix can differ from the prefix of the whole decoding (a sentencepiece byte
    # run); clamp to the full text so the spans stay ordered and inside it.
    start, end = min(start, len(decoded)), min(len(cur), len(decoded))
    spans.append((to_text[start], to_text[max(start, end)]))
    prev = cur
  return spans


@dataclasses.dataclass(frozen=True)
class Piece:
  """A run of characters with one mention (or none) and one token (or none)."""

  start: int
  end: int
  span: Optional[Span]
  token: Optional[int]


def pieces(text: str, spans: Sequence[Span], tokens: Sequence[tuple[int, int]] = ()
           ) -> list[Piece]:
  """`text` cut at every span and token boundary into consecutive pieces covering it."""
  cuts = {0, len(text)}
  for s in spans:
    cuts.update((s.start, s.end))
  for a, b in tokens:
    cuts.update((a, b))
  cuts = sorted(c for c in cuts if 0 <= c <= len(text))
  out = []
  for a, b in zip(cuts, cuts[1:]):
    if b <= a:
      continue
    span = next((s for s in spans if s.start <= a and b <= s.end), None)
    token = next((k for k, (ta, tb) in enumerate(tokens) if ta <= a and b <= tb), None)
    out.append(Piece(a, b, span, token))
  return out
