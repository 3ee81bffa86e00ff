"""The grain input pipeline: TFDS array_record source -> batches of model inputs.

    source -> (oversampling) -> seeded shuffle, reshuffled each epoch
      -> decode -> resize -> random crop (center crop for eval) -> z-score
      -> (graph augmentation, sentence shuffle: training only) -> tokenize -> batch
      -> this process's batches (training) | this process's examples (eval)

Every random choice is a function of (seed, position in the stream), so the same config gives the
same batches, and an iterator restored from `get_state()` continues with exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any, Sequence

import grain
import jax
import numpy as np
from absl import flags

from cnx2rg_jax.data import graph_augment, oversampling, transforms
from cnx2rg_jax.data.dataset import DataConfigError, PreparedDataset, SplitTexts, read_split_texts


class IndexedSource:
  """A random-access source read through an index list (for oversampling). Picklable."""

  def __init__(self, source: Sequence, indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int):
    return self._source[int(self._indices[i])]


@dataclasses.dataclass(frozen=True)
class ProcessShard:
  index: int
  count: int

  @classmethod
  def from_jax(cls) -> "ProcessShard":
    return cls(jax.process_index(), jax.process_count())


def epoch_indices(data, split_texts: SplitTexts | None, seed: int) -> np.ndarray | None:
  """The record indices of one training epoch, or None for the plain 0..N-1."""
  if not data.oversample.enabled:
    return None
  if split_texts is None or not split_texts.has_keyword_labels.all():
    missing = 0 if split_texts is None else int((~split_texts.has_keyword_labels).sum())
    raise DataConfigError(
        "data.oversample.enabled needs keyword labels on every training report; "
        f"{missing or 'some'} of this build's training reports have none (data.annotate="
        f"{data.annotate!r}). Let the build label them (data.annotate='labeler', a Chinese "
        "release's default, or 'cn_radgraph'), add 'keywords' to the annotation, or turn "
        "oversampling off (--config.data.oversample.enabled=False)")
  plan = oversampling.plan_oversampling(
      split_texts.keyword_labels, min_count=data.oversample.min_count,
      max_rate=data.oversample.max_rate, max_samples=data.oversample.max_samples, seed=seed)
  return plan.indices


def steps_per_epoch(data, split_texts: SplitTexts, seed: int, global_batch: int) -> int:
  """Global steps of one training epoch: the oversampled epoch's length (`epoch_indices`) when
  oversampling is on, else the split's, over the global batch (at least 1). R2Gen's StepLR
  counts epochs of the dataset it trains on, which the paper's oversampling enlarges."""
  indices = epoch_indices(data, split_texts, seed)
  n = len(split_texts.ids) if indices is None else len(indices)
  return max(1, n // global_batch)


def phrase_bank(data, prepared: PreparedDataset, split_texts: SplitTexts | None
                ) -> graph_augment.PhraseBank | None:
  """The graph augmentation's phrase bank of the train split, or None when it is off.

  `split_texts` (of the train split) is read from `prepared` when not given.
  """
  if not data.graph_augment.enabled:
    return None
  if prepared.report_cleaner != "zh":
    raise DataConfigError("data.graph_augment.enabled needs Chinese reports with CN-RadGraph "
                          f"graphs; this build's reports are {prepared.language!r}, which no "
                          "annotator reads (data.annotate). Turn it off "
                          "(--config.data.graph_augment.enabled=False)")
  texts = split_texts if split_texts is not None else read_split_texts(prepared, "train")
  if not any(g is not None for g in texts.graphs):
    raise DataConfigError("data.graph_augment.enabled needs CN-RadGraph graphs ('entities' and "
                          "'relations') on training reports; this build has none (data.annotate="
                          f"{data.annotate!r}). Let the build make them (data.annotate='labeler', "
                          "a Chinese release's default, or 'cn_radgraph'), add graphs to the "
                          "annotation, or turn it off (--config.data.graph_augment.enabled=False)")
  return graph_augment.PhraseBank.from_split(texts)


def make_transform(data, tokenizer, report_cleaner: str,
                   bank: graph_augment.PhraseBank | None = None,
                   num_views: int = 1) -> transforms.ExampleTransform:
  """The per-record transform; `bank` (from `phrase_bank`) switches the graph augmentation on
  for training records; `num_views` is the build's (PreparedDataset.num_views)."""
  return transforms.ExampleTransform(
      tokenizer=tokenizer, report_cleaner=report_cleaner, image_size=data.image_size,
      crop_size=data.crop_size, normalization=data.normalization, max_tokens=data.max_tokens,
      sentence_shuffle=data.sentence_shuffle,
      graph_augment_probability=data.graph_augment.probability if bank is not None else 0.0,
      phrase_bank=bank, num_views=num_views)


WATCH_PARENT_SECONDS = 1.0


def _parent_alive(pid: int) -> bool:
  """Whether process `pid` still runs (a zombie, killed but not yet reaped, does not)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except FileNotFoundError:
    return False
  except OSError:  # no /proc (not Linux): signal 0 tests existence
    try:
      os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
      return False
    return True


def exit_with_parent(parent_pid: int, worker_index: int, worker_count: int) -> None:
  """grain worker_init_fn: a daemon thread ends this worker process once the process that
  started the pipeline is gone, so a training process killed by SIGKILL leaves no input
  workers behind (grain stops them only on a clean exit)."""
  del worker_index, worker_count

  def watch():
    while _parent_alive(parent_pid):
      time.sleep(WATCH_PARENT_SECONDS)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _to_iter(ds: grain.MapDataset, data) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.read_threads,
                                            prefetch_buffer_size=data.prefetch))
  if data.num_workers > 0:
    # grain's worker processes read absl flags; outside launch.py (tests, notebooks) nobody
    # parsed them, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers),
                        worker_init_fn=functools.partial(exit_with_parent, os.getpid()))
  return it


def train_dataset(prepared: PreparedDataset, data, tokenizer, *, batch_size: int, seed: int,
                  shard: ProcessShard, split_texts: SplitTexts | None = None,
                  num_epochs: int | None = None, start_step: int = 0) -> grain.IterDataset:
  """Endless (or `num_epochs`) shuffled training batches: this process's part of each global
  batch, from global step `start_step` on.

  `batch_size` is per process. The examples are shuffled, augmented and cut into batches of
  `batch_size` as one stream, the same on every process; global batch g is that stream's
  batches g*P .. g*P+P-1 (P processes), and process i reads only batch g*P+i. So the global
  batch (the processes' batches in process order) is the same for any process count with the
  same global size, and global step s is a position every topology can start from.
  `split_texts` (of the train split) is needed for oversampling; the graph augmentation builds
  its phrase bank from it (reading it when not given).
  """
  bank = phrase_bank(data, prepared, split_texts)
  source: Any = prepared.source("train")
  indices = epoch_indices(data, split_texts, seed)
  if indices is not None:
    source = IndexedSource(source, indices)
  ds = grain.MapDataset.source(source)
  ds = ds.seed(seed).shuffle().repeat(num_epochs)
  ds = ds.random_map(make_transform(data, tokenizer, prepared.report_cleaner, bank,
                                    prepared.num_views))
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds[shard.index + start_step * shard.count::shard.count]  # lazy: reads only these
  return _to_iter(ds, data)


def eval_dataset(prepared: PreparedDataset, split: str, data, tokenizer, *, batch_size: int,
                 shard: ProcessShard) -> grain.IterDataset:
  """One pass over this process's shard of `split`, in order, center-cropped; the last batch may
  be short."""
  ds = grain.MapDataset.source(prepared.source(split))
  ds = ds[shard.index::shard.count]
  ds = ds.map(make_transform(data, tokenizer, prepared.report_cleaner,
                             num_views=prepared.num_views))
  ds = ds.batch(batch_size, drop_remainder=False)
  return _to_iter(ds, data)
