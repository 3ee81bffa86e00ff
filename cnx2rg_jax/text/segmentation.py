"""Word segmentation of cleaned Chinese reports with jieba and a radiology user dictionary.

The segmenter is a private `jieba.Tokenizer`, never jieba's global one, so that nothing else in
the process (or this module's users) can change our dictionary. It is built lazily, once per
process: the first `segment` call pays about a second to load jieba's dictionary (from a
per-user cache file after the first run), later calls pay nothing.

Segmentation runs jieba's dictionary route without its HMM new-word discovery (HMM=False): the
HMM glues unknown character runs into ad-hoc "words" that then show up as rare vocabulary
entries, whereas without it an unknown run falls apart into single characters that a
vocabulary already holds. It also keeps us off jieba's module-global HMM state.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import re
import tempfile
import threading

import jieba

from cnx2rg_jax.text import keywords

# Radiology phrases that must stay one token besides the keyword terms. Each is a unit a
# radiologist reads as one word; jieba's general dictionary splits most of them. Lobe prefixes
# such as 右下肺 are deliberately absent: in 右下肺野 they would cut 肺野 in two.
EXTRA_TERMS: tuple[str, ...] = (
    "肋膈角", "主动脉结", "密度增高影", "密度减低影", "片状影", "斑片状影", "条索状影", "索条影",
    "结节影", "纵隔", "膈面", "心影", "肺纹理", "肺野", "肺门影", "透亮度", "胸腔积液", "气胸",
    "液气胸", "起搏器", "引流管", "胸骨", "钢丝", "胸骨钢丝", "肋骨骨折", "肺不张", "肺气肿",
    "钙化灶", "侧弯", "居中", "锐利", "光整", "未见", "异常", "心胸比", "实质性病变", "胸膜增厚",
    "肺实质", "肺尖", "肺底", "双侧", "增浓", "炎性病变", "血管影",
)

# Frequency given to every user term. jieba picks the segmentation with the highest product of
# word probabilities freq/total, so a split of a term into pieces of frequencies a and b wins
# only if a*b > 10^5 * total (about 10^13); jieba's most frequent word has about 3*10^5.
USER_TERM_FREQ = 100_000

# jieba cuts a text block by block, a block being a maximal run of CJK/alphanumeric characters
# (its own regex); blocks never influence each other. Reports repeat the same clauses over and
# over ("心影不大", "纵隔居中"), so caching the cut of each block makes segmentation nearly free
# in the input pipeline while giving exactly jieba's output.
_BLOCK = jieba.re_han_default
BLOCK_CACHE_SIZE = 1 << 17

_lock = threading.Lock()
_cache: dict[int, jieba.Tokenizer] = {}  # pid -> tokenizer: a forked worker builds its own


def user_terms() -> tuple[str, ...]:
  """The user dictionary: every multi-character keyword term and every EXTRA_TERMS entry.

  Sorted and free of duplicates. Single-character keyword terms (心, 肺, 影, ...) are left out:
  a single character is always whole anyway, and a high frequency on it would only pull it out
  of ordinary words around it.
  """
  terms = {t for t in keywords.TERM_TO_KEY if len(t) > 1}
  terms.update(EXTRA_TERMS)
  return tuple(sorted(terms))


def _cache_dir() -> str:
  try:
    user = getpass.getuser()
  except Exception:  # no user name in this environment (e.g. a bare container uid)
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
  user = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
  path = os.path.join(tempfile.gettempdir(), f"cnx2rg-jieba-{user}")
  os.makedirs(path, mode=0o700, exist_ok=True)
  return path


def _build() -> jieba.Tokenizer:
  jieba.setLogLevel(logging.WARNING)  # jieba logs every dictionary load at INFO
  tk = jieba.Tokenizer()
  tk.tmp_dir = _cache_dir()
  tk.cache_file = "jieba.cache"
  tk.initialize()
  for term in user_terms():
    tk.add_word(term, freq=USER_TERM_FREQ)
  return tk


def get_tokenizer() -> jieba.Tokenizer:
  """This process's jieba tokenizer with the radiology user dictionary (built on first use)."""
  pid = os.getpid()
  tk = _cache.get(pid)
  if tk is None:
    with _lock:
      tk = _cache.get(pid)
      if tk is None:
        _cache.clear()  # entries of a parent process are of no use here
        tk = _build()
        _cache[pid] = tk
  return tk


def segment(text: str) -> list[str]:
  """Splits `text` into words; "".join(segment(text)) == text always holds.

  Every punctuation mark is a token of its own, and user-dictionary terms come out whole (or
  inside a longer dictionary word, e.g. 密度增高影 inside 片状密度增高影). Meant for text that
  `clean_report` produced, which has no whitespace; whitespace in other input comes back as
  tokens of its own. Raises ValueError for a non-str input.
  """
  if not isinstance(text, str):
    raise ValueError(f"segment takes a str, got {type(text).__name__}")
  out: list[str] = []
  for block in _BLOCK.split(text):
    if block:
      out.extend(_cut_block(block))
  return out


@functools.lru_cache(maxsize=BLOCK_CACHE_SIZE)
def _cut_block(block: str) -> tuple[str, ...]:
  # The cache survives a fork, which is fine: every process builds the same dictionary.
  return tuple(get_tokenizer().cut(block, HMM=False))
