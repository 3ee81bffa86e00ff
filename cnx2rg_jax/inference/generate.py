"""Reports from images with a trained CN-X2RG: what eval during training, `--mode=eval`,
`--mode=predict` and the retrieval baseline share.

`ReportGenerator` runs one jitted program per fixed-size global batch: the eval-mode encoder,
the keyword head, the pooled image features and the beam search (`models.search`); with
`decode.method="mbr"` also `decode.mbr_samples` sampled reports per image, from which
`evaluation.mbr.Chooser` picks the report on the host. Short batches are padded to the fixed size
(one compiled shape), and rows are tracked by an integer index, so that every process of a
multi-host run can feed its own shard and all of them get every row back.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cnx2rg_jax import errors, sharding
from cnx2rg_jax.data import dataset, pipeline
from cnx2rg_jax.evaluation import clinical, mbr
from cnx2rg_jax.models import search
from cnx2rg_jax.models.cnx2rg import CNX2RG


@dataclasses.dataclass
class Outputs:
  """Per-row results, ordered by `index` (the row's position in its split or file list)."""

  index: np.ndarray  # int64 [N]
  token_ids: Optional[np.ndarray]  # int32 [N, max_len]: tokens after bos (None: features only)
  keyword_probs: np.ndarray  # float32 [N, 48]: the keyword head's sigmoid
  features: np.ndarray  # float32 [N, d_vf]: the ResNet's pooled features


DECODE_METHODS = ("beam", "mbr")


def describe(decode) -> str:
  """How reports are chosen, in words: 'beam 3' or 'MBR over 16 samples (T 1) and beam 3'."""
  beam = f"beam {decode.beam_size}"
  if decode.method != "mbr":
    return beam
  head = (f", keyword head weight {decode.mbr_keyword_weight:g}"
          if decode.mbr_keyword_weight > 0 else "")
  return f"MBR over {decode.mbr_samples} samples (T {decode.mbr_temperature:g}){head} and {beam}"


def image_keys(seed: int, images: jax.Array) -> jax.Array:
  """One sampling key per image, fold_in(PRNGKey(seed), a 32-bit hash of its pixels' bits): MBR's
  samples, so its report, depend on the image alone, not on its batch, its position or the
  number of processes; the same pixels give the same report."""
  bits = jax.lax.bitcast_convert_type(images.astype(jnp.float32), jnp.uint32)
  bits = bits.reshape(bits.shape[0], -1)
  weights = jnp.arange(bits.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
  hashes = jnp.sum(bits * weights, axis=1, dtype=jnp.uint32)  # wraps modulo 2**32
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda h: jax.random.fold_in(base, h))(hashes)


class ReportGenerator:
  """Beam search or MBR (or features only) over batches of images, data-parallel on `mesh`.

  `batch_size` is global; it must split evenly over the processes and the mesh's data axis.
  `chooser` (an `evaluation.mbr.Chooser`) is needed when `decode.method` is "mbr"; `from_config`
  builds it.
  """

  def __init__(self, model: CNX2RG, mesh: Mesh, decode, batch_size: int,
               chooser: Optional[mbr.Chooser] = None):
    self.method = decode.method
    if self.method not in DECODE_METHODS:
      raise errors.ConfigError(f"decode.method={self.method!r} is not one of "
                               f"{DECODE_METHODS}")
    if self.method == "mbr" and chooser is None:
      raise ValueError("decode.method='mbr' needs a chooser; build the generator with "
                       "ReportGenerator.from_config")
    self.chooser = chooser
    n_data = mesh.shape[sharding.DATA_AXIS]
    if batch_size % (jax.process_count() * n_data):
      raise errors.ConfigError(
          f"eval.batch_size={batch_size} must split evenly over {jax.process_count()} "
          f"process(es) and the mesh's {n_data} data shards; make it a multiple of "
          f"{jax.process_count() * n_data}")
    self.model, self.mesh, self.decode = model, mesh, decode
    self.batch_size = batch_size
    self.local_batch = batch_size // jax.process_count()
    self._search = jax.jit(self._search_fn)
    self._features = jax.jit(self._features_fn)

  @classmethod
  def from_config(cls, model: CNX2RG, mesh: Mesh, config, tokenizer: Any) -> "ReportGenerator":
    """The generator `config` asks for (decode section, eval.batch_size; for MBR the labeler
    named by decode.mbr_utility)."""
    chooser = None
    if config.decode.method == "mbr":
      labeler = clinical.make_labeler(config.decode.mbr_utility, config.eval.cn_radgraph_dir)
      chooser = mbr.Chooser(tokenizer, labeler, config.decode.mbr_keyword_weight)
    return cls(model, mesh, config.decode, config.eval.batch_size, chooser)

  def _search_fn(self, variables, images):
    memory, keyword_logits, pooled = self.model.apply(variables, images,
                                                      method=CNX2RG.encode_with_features)
    d = self.decode
    ids, scores = search.search_reports(self.model, variables, memory, beam_size=d.beam_size,
                                        max_len=d.max_len, length_penalty=d.length_penalty,
                                        block_trigrams=d.block_trigrams)
    out = {"ids": ids, "probs": jax.nn.sigmoid(keyword_logits),
           "features": pooled.astype(jnp.float32)}
    if self.method == "mbr":
      keys = image_keys(d.mbr_seed, images)
      out["sample_ids"], out["sample_scores"] = search.sample_reports(
          self.model, variables, memory, keys, num_samples=d.mbr_samples, max_len=d.max_len,
          temperature=d.mbr_temperature)
      out["scores"] = scores
    return out

  def _features_fn(self, variables, images):
    _, keyword_logits, pooled = self.model.apply(variables, images,
                                                 method=CNX2RG.encode_with_features)
    return jax.nn.sigmoid(keyword_logits), pooled.astype(jnp.float32)

  def run_batch(self, variables, images: np.ndarray, index: np.ndarray, with_reports: bool = True
                ) -> tuple:
    """One global step from this process's `images` [b <= local_batch, H, W, 1] with row
    indices `index` [b]; returns (index, ids or None, keyword_probs, features) of all processes'
    real rows, gathered to every process."""
    b = len(index)
    if b > self.local_batch:
      raise ValueError(f"{b} images for a per-process batch of {self.local_batch}")
    pad = self.local_batch - b
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    index = np.concatenate([np.asarray(index, np.int64), np.full((pad,), -1, np.int64)])
    batch = sharding.global_batch({"image": images.astype(np.float32)}, self.mesh)
    if with_reports:
      out = self._search(variables, batch["image"])
    else:
      probs, feats = self._features(variables, batch["image"])
      out = {"probs": probs, "features": feats}
    out["index"] = index
    if jax.process_count() > 1:
      out = {k: np.asarray(multihost_utils.process_allgather(x, tiled=True))
             for k, x in out.items()}
    else:
      out = {k: np.asarray(x) for k, x in out.items()}
    keep = out["index"] >= 0
    out = {k: x[keep] for k, x in out.items()}
    ids = out.get("ids")
    if with_reports and self.method == "mbr":
      ids, _ = self.chooser(out["ids"], out["scores"], out["sample_ids"], out["sample_scores"],
                            out["probs"])
    return out["index"], ids, out["probs"], out["features"]

  def stream(self, variables, batches: Iterator[tuple[np.ndarray, np.ndarray]],
             num_batches: Optional[int] = None, with_reports: bool = True) -> Iterator[tuple]:
    """`run_batch`'s result for each global step, from this process's (images, index) pairs of
    `batches`: `num_batches` steps, a process whose stream ends early feeding empty batches; or,
    with `num_batches` None, as many steps as `batches` yields (every process's must yield the
    same number, as `slot_batches` does)."""
    steps = itertools.count() if num_batches is None else range(num_batches)
    empty = None
    for _ in steps:
      item = next(batches, None)
      if item is None:
        if num_batches is None:
          return
        item = empty
      else:
        empty = (item[0][:0], item[1][:0])
      if item is None:  # this process has no rows at all: shapes come from the first step
        raise ValueError("a process has no rows to feed; give it at least one")
      yield self.run_batch(variables, *item, with_reports=with_reports)

  def run_stream(self, variables, batches: Iterator[tuple[np.ndarray, np.ndarray]],
                 num_batches: int, with_reports: bool = True) -> Outputs:
    """All rows of `num_batches` (images, index) pairs; a process whose stream ends early feeds
    empty batches, so that every process runs the same number of global steps."""
    parts = list(self.stream(variables, batches, num_batches, with_reports))
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    cat = lambda k: np.concatenate([p[k] for p in parts])[order]  # noqa: E731
    return Outputs(index=index[order], token_ids=cat(1) if with_reports else None,
                   keyword_probs=cat(2), features=cat(3))

  def slot_batches(self, rows: Iterable[tuple[int, np.ndarray]], image_shape: tuple
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This process's (images, index) of each global batch of `rows`, (index, image) pairs that
    every process reads alike: of every `batch_size` rows, slots [p * local_batch, (p + 1) *
    local_batch) go to process p. Every process yields ceil(len(rows) / batch_size) batches,
    empty ones of shape `image_shape` (its batch axis 0) where it has no slot, each as soon as
    its global batch is complete (`rows` is read lazily)."""
    me = jax.process_index()

    def batch(feed):
      images = np.stack([x for _, x in feed]) if feed else np.zeros(image_shape, np.float32)
      return images, np.asarray([i for i, _ in feed], np.int64)

    feed: list[tuple[int, np.ndarray]] = []
    count = 0
    for i, image in rows:
      if (count % self.batch_size) // self.local_batch == me:  # this process's slot
        feed.append((i, image))
      count += 1
      if count % self.batch_size == 0:
        yield batch(feed)
        feed = []
    if count % self.batch_size:
      yield batch(feed)


def split_batches(prepared: dataset.PreparedDataset, split: str, data, tokenizer,
                  local_batch: int, limit: int = 0) -> tuple[Iterator, int]:
  """(iterator of (images, split indices) for this process's shard of `split`, the number of
  global steps every process runs). `limit` > 0 keeps the first `limit` examples only."""
  n = prepared.num_examples(split)
  if limit:
    n = min(n, limit)
  shard = pipeline.ProcessShard.from_jax()
  mine = np.arange(shard.index, n, shard.count)
  steps = max(1, math.ceil(math.ceil(n / shard.count) / local_batch))
  ds = pipeline.eval_dataset(prepared, split, data, tokenizer, batch_size=local_batch,
                             shard=shard)

  def gen():
    pos = 0
    it = iter(ds)
    try:
      for batch in it:
        if pos >= len(mine):
          return
        # A copy: grain's shared-memory batch is released now, not at interpreter exit.
        images = np.array(batch["image"][: len(mine) - pos])
        del batch
        yield images, mine[pos:pos + len(images)]
        pos += len(images)
    finally:  # stop grain's worker processes and free their shared memory now, not at exit
      close = getattr(it, "close", None)
      if close is not None:
        close()

  return gen(), steps


def decode_texts(tokenizer: Any, token_ids: np.ndarray) -> list[str]:
  """Token ids after bos (eos, then pad) -> report strings."""
  return [tokenizer.decode(row.tolist()) for row in token_ids]
