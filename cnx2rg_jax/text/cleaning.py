"""Normalization of Chinese radiology report text.

`clean_report` maps a raw report to the one canonical form that every later stage (segmentation,
vocabularies, labeling, metrics) sees. Its conventions:

* Full-width letters, digits and ASCII-like symbols become half-width (１２ -> 12, ＡＢ -> AB,
  ％ -> %); the Chinese punctuation marks stay full-width.
* ASCII punctuation becomes its Chinese form (, ; : ? ! ( ) -> ，；：？！（）, '.' -> 。), except inside
  numbers: '.' and ':' between two digits stay (3.5cm, 1:2). ',' always maps, since between
  digits it lists ribs ("第5,6肋" -> "第5，6肋").
* All whitespace goes (Chinese has none); so does list numbering at the start of a sentence
  ("1." "2、" "（1）" "(2)" "①" "一、"). A numbered item that begins a new line also ends the
  previous one, so "两肺纹理增强\n2.心影不大" keeps its two sentences.
* A run of separators (。；，：、) collapses to its strongest mark (。 > ； > the others), so
  "。。" -> "。" and "，。" -> "。"; repeated ？ or ！ collapse to one.
* 。 is the only sentence terminator: a non-empty result always ends with 。. A ？ stays where it
  is, because in these reports it marks uncertainty ("右侧第5肋骨折？") rather than ending a
  sentence; "骨折？" at the very end becomes "骨折？。".

The function is idempotent: clean_report(clean_report(x)) == clean_report(x).
"""

from __future__ import annotations

import re

# Full-width forms that are already the Chinese punctuation we keep; every other character of
# the U+FF01..U+FF5E block is folded onto its ASCII twin.
_KEEP_FULL_WIDTH = frozenset("，；：？！（）")
_FOLD = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F) if chr(cp) not in _KEEP_FULL_WIDTH}
_FOLD[0x3000] = 0x20  # ideographic space; removed later with the rest of the whitespace
_FOLD[0xFF61] = ord("。")  # half-width ideographic full stop
for _cp in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF):  # zero-width characters: invisible noise
  _FOLD[_cp] = None
_FOLD_TABLE = str.maketrans({chr(k): (chr(v) if v is not None else None) for k, v in _FOLD.items()})

# List markers. "\d{1,2}" keeps years and measurements out; "(?!\d)" keeps decimals ("1.5cm")
# and rib lists ("5、6肋") from looking like numbering.
_CN_NUMERALS = "一二三四五六七八九十"
_MARKER = (
    r"(?:\d{1,2}[.、)）](?!\d)"
    rf"|[(（](?:\d{{1,2}}|[{_CN_NUMERALS}]{{1,3}})[)）]"
    rf"|[{_CN_NUMERALS}]{{1,3}}、"
    "|[\u2460-\u2473\u2776-\u277F\u2780-\u2793]"  # ①..⑳, ❶.., ➀..
    r")"
)
# A marker counts only at the start of a sentence: the start of the text, a new line, a
# terminator, or a '.'/':' that is not part of a number.
_NUMBERING = re.compile(
    r"(?:^|(?<=[\r\n])|(?<=[。；！？;!?])|(?<=\D[.:：]))"
    rf"(?P<pre>[ \t\u3000]*)(?P<marker>{_MARKER})"
)
# Circled numbers are never report content: dropped wherever they are left.
_CIRCLED = re.compile("[\u2460-\u2473\u2776-\u277F\u2780-\u2793]")
_WHITESPACE = re.compile(r"\s+")

# '.' and ':' keep their ASCII form only with a digit on each side (3.5cm, 1:2). ',' between
# digits is a rib list in these reports ("第5,6肋"), not a thousands separator, so it always maps.
_NUMERIC_PUNCT = re.compile(r"(?<!\d)[.:]|[.:](?!\d)")
_NUMERIC_TO_CN = {".": "。", ":": "："}
_ALWAYS_TO_CN = str.maketrans({",": "，", ";": "；", "?": "？", "!": "！", "(": "（", ")": "）"})

# Separator runs, and each separator's strength: the strongest mark of a run survives, the
# first one among equals.
_RANK = {"。": 3, "；": 2, "，": 1, "、": 1, "：": 1}
_SEPARATOR_RUN = re.compile("[。；，、：]{2,}")
_REPEATED_MARK = re.compile(r"([？！])\1+")
_LEADING_SEPARATORS = re.compile("^[。；，、：]+")

SENTENCE_END = "。"


def _check_str(text, what: str = "text") -> None:
  if not isinstance(text, str):
    raise ValueError(f"{what} must be a str, got {type(text).__name__}: {text!r:.80}")


def _drop_numbering(text: str) -> str:
  """Removes list markers at sentence starts; one after a line break becomes a 。."""

  def replace(m: re.Match) -> str:
    start = m.start()
    # A marker at the start of a line ends whatever the previous line left open.
    return SENTENCE_END if start > 0 and text[start - 1] in "\r\n" else ""

  # Markers can follow each other ("（1）（2）"); removing one exposes the next.
  while True:
    new = _NUMBERING.sub(replace, text)
    if new == text:
      return _CIRCLED.sub("", text)
    text = new


def _collapse_run(m: re.Match) -> str:
  run = m.group(0)
  return max(run, key=lambda c: _RANK[c])  # max keeps the first of equally ranked marks


def _clean_once(text: str) -> str:
  text = text.translate(_FOLD_TABLE)
  text = _drop_numbering(text)
  text = _WHITESPACE.sub("", text)
  text = _NUMERIC_PUNCT.sub(lambda m: _NUMERIC_TO_CN[m.group(0)], text)
  text = text.translate(_ALWAYS_TO_CN)
  text = _SEPARATOR_RUN.sub(_collapse_run, text)
  text = _REPEATED_MARK.sub(r"\1", text)
  text = _LEADING_SEPARATORS.sub("", text)
  if not text:
    return ""
  if text[-1] in _RANK:
    return text[:-1] + SENTENCE_END
  return text + SENTENCE_END


def clean_report(text: str) -> str:
  """Returns the canonical form of a Chinese report (see the module docstring).

  The result has no whitespace, uses Chinese punctuation outside numbers, carries no list
  numbering, has no repeated separators, and ends with 。 unless it is empty. Applying it twice
  gives the same string as applying it once. Raises ValueError for a non-str input.
  """
  _check_str(text)
  # One pass is almost always a fixed point; the loop covers the rare input where a first pass
  # exposes a new sentence start (e.g. a marker right after a collapsed separator run).
  for _ in range(4):
    cleaned = _clean_once(text)
    if cleaned == text:
      break
    text = cleaned
  return text


def split_sentences(text: str) -> list[str]:
  """Splits a cleaned report into its sentences, each ending with its 。.

  Only 。 splits: ； stays inside a sentence. Text after the last 。 (absent in cleaned text)
  becomes a last sentence of its own, without a 。 added. Empty sentences are dropped, so
  "".join(split_sentences(t)) == t for every cleaned t. Raises ValueError for a non-str input.
  """
  _check_str(text)
  sentences = []
  start = 0
  while True:
    end = text.find(SENTENCE_END, start)
    if end < 0:
      break
    if end > start:
      sentences.append(text[start:end + 1])
    start = end + 1
  if start < len(text):
    sentences.append(text[start:])
  return sentences


def join_sentences(sentences) -> str:
  """Joins sentences back into one report; the inverse of `split_sentences`.

  Each sentence is concatenated as given (no separator is added, since each already ends with
  its 。). Raises ValueError if `sentences` is a str or holds a non-str.
  """
  if isinstance(sentences, str):
    raise ValueError("join_sentences takes a list of sentences, got a single str")
  sentences = list(sentences)
  for i, s in enumerate(sentences):
    _check_str(s, f"sentence {i}")
  return "".join(sentences)


def spans_ending_at(text: str, ends: str) -> list[tuple[int, int]]:
  """[start, end) character spans that cut `text` after every character in `ends` (which stays
  in its span); a trailing remainder is a span of its own. The spans concatenate to `text`."""
  out, start = [], 0
  for i, ch in enumerate(text):
    if ch in ends:
      out.append((start, i + 1))
      start = i + 1
  if start < len(text):
    out.append((start, len(text)))
  return out
