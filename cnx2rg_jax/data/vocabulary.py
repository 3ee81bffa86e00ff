"""The run's tokenizer: loaded from DIR/tokenizer, or built on the training reports and saved."""

from __future__ import annotations

import logging
import pathlib

from cnx2rg_jax import distributed
from cnx2rg_jax.data.dataset import PreparedDataset, SplitTexts, read_split_texts
from cnx2rg_jax.text import tokenizer as tokenizer_lib


def tokenizer_for_run(text, prepared: PreparedDataset, workdir: str | None,
                      train_texts: SplitTexts | None = None):
  """The tokenizer of the run in `workdir` (built on the train split the first time).

  A run keeps its tokenizer: token ids in checkpoints stay meaningful even if the data changes.
  """
  # Several processes: process 0 builds and saves it; the others then load it (or, where the
  # workdir is not shared, build the same one from the same reports).
  return distributed.first_then_others(
      lambda: _load_or_build(text, prepared, workdir, train_texts), "the run's tokenizer")


def _load_or_build(text, prepared: PreparedDataset, workdir: str | None,
                   train_texts: SplitTexts | None):
  directory = pathlib.Path(workdir) / "tokenizer" if workdir else None
  if directory is not None and (directory / "vocab.json").exists():
    return tokenizer_lib.load_tokenizer(str(directory))
  if train_texts is None:
    train_texts = read_split_texts(prepared, "train")
  tok = tokenizer_lib.build_tokenizer(
      text.tokenizer, train_texts.reports, min_count=text.min_count,
      vocab_size=text.vocab_size, language=prepared.language, segmenter=text.segmenter,
      pkuseg_model=text.pkuseg_model)
  if directory is not None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory))
    logging.info("built a %s tokenizer of %d tokens on %d training reports -> %s",
                 text.tokenizer, tok.vocab_size, len(train_texts.reports), directory)
  return tok
