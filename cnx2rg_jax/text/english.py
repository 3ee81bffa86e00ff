"""R2Gen's English report cleaning, re-implemented for its exact outputs.

R2Gen (cuhksz-nlp/R2Gen, `modules/tokenizers.py`) normalises every IU X-Ray and MIMIC-CXR report
before building its vocabulary and before scoring, so matching its BLEU/METEOR/ROUGE numbers needs
byte-identical cleaning. Its behaviour, step by step:

1. Whole-report rewrites, each a single left-to-right `str.replace` pass (so a run of k repeated
   characters only shrinks to ceil(k / 2) per pass; a fixed number of passes is applied, not "until
   no change"):
   - MIMIC-CXR only: newline -> space; "__" -> "_" (7 passes); "  " -> " " (6 passes).
   - ".." -> "." (3 passes for IU X-Ray, 8 for MIMIC-CXR).
   - numbered-list markers: every "1. " is deleted (anywhere, also inside "11. "); then
     ". 2. ", ". 3. ", ". 4. ", ". 5. " -> ". "; then " 2. ", " 3. ", " 4. ", " 5. " -> ". ".
   Then the report is stripped, lower-cased and split on ". " into sentences.
2. Per sentence: delete the characters `"`, `/`, `\\` and `'`; strip surrounding whitespace;
   lower-case; then delete every character of R2Gen's regex class `[.,?;*!%^&_+():-\\[\\]{}]`.
   In that class `:-\\[` is a RANGE (":" .. "["), so it deletes `: ; < = > ? @ A-Z [` and NOT the
   hyphen: "x-ray" survives. Whitespace exposed by the deletion is not stripped again, and empty
   sentences are kept (R2Gen's emptiness test compares a string to a list, which is never equal).
3. Sentences are joined with " . " and " ." is appended.

IU X-Ray reports keep their newlines (step 1 has no newline rule for them); whitespace
tokenisation (`str.split()`) treats them as spaces later.
"""

from __future__ import annotations

import re
import string
from typing import Callable

# The characters R2Gen's per-sentence regex deletes, spelled out (the ":" .. "[" range expanded).
_SENTENCE_DELETE_CHARS = ".,?;*!%^&_+()" + ":;<=>?@" + string.ascii_uppercase + "[]{}"
_SENTENCE_DELETE_RE = re.compile("[" + re.escape("".join(sorted(set(_SENTENCE_DELETE_CHARS)))) + "]")
# Deleted before stripping (plain substring removal in R2Gen).
_SENTENCE_DROP_FIRST = ('"', "/", "\\", "'")

# (old, new) rewrites after the "..": list markers "1. ", then "2."-"5." after a full stop, then
# "2."-"5." after a space. Order matters and is R2Gen's.
_LIST_MARKER_REWRITES: tuple[tuple[str, str], ...] = (
    ("1. ", ""),
    *((f". {n}. ", ". ") for n in range(2, 6)),
    *((f" {n}. ", ". ") for n in range(2, 6)),
)


def _replace_passes(text: str, old: str, new: str, passes: int) -> str:
  """Applies `str.replace(old, new)` exactly `passes` times (each pass is non-overlapping)."""
  for _ in range(passes):
    text = text.replace(old, new)
  return text


def _clean_sentence(sentence: str) -> str:
  for ch in _SENTENCE_DROP_FIRST:
    sentence = sentence.replace(ch, "")
  sentence = sentence.strip().lower()
  return _SENTENCE_DELETE_RE.sub("", sentence)


def _finish(text: str) -> str:
  """Shared tail: list markers, strip, lower, split on '. ', clean each sentence, join."""
  for old, new in _LIST_MARKER_REWRITES:
    text = text.replace(old, new)
  sentences = text.strip().lower().split(". ")
  return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def clean_report_iu_xray(text: str) -> str:
  """Cleans an IU X-Ray report exactly as R2Gen's `Tokenizer.clean_report_iu_xray` does."""
  text = _replace_passes(text, "..", ".", 3)
  return _finish(text)


def clean_report_mimic_cxr(text: str) -> str:
  """Cleans a MIMIC-CXR report exactly as R2Gen's `Tokenizer.clean_report_mimic_cxr` does."""
  text = text.replace("\n", " ")
  text = _replace_passes(text, "__", "_", 7)
  text = _replace_passes(text, "  ", " ", 6)
  text = _replace_passes(text, "..", ".", 8)
  return _finish(text)


ENGLISH_CLEANERS: dict[str, Callable[[str], str]] = {
    "iu_xray": clean_report_iu_xray,
    "mimic_cxr": clean_report_mimic_cxr,
}
