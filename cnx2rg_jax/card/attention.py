"""Cross-attention maps of generated reports, from one teacher-forced pass.

The jitted beam search is left alone: after it, the generated tokens are fed back with teacher
forcing (`CNX2RG.__call__` in eval mode) with the 'intermediates' collection mutable, so every
`MultiHeadAttention.attend` sows its softmax weights. The card reads the LAST decoder layer's
cross-attention

    intermediates['transformer']['decoder_layers_{N-1}']['src_attn']['attention_probs'][0]

[B, heads, T, S], averages it over the heads and keeps the keys of the visual patches: the fused
visual sequence is [patches | learnable prompts | frozen prompt features] (models/prompt.py), so
the first K = h * w keys are the ResNet's feature map in row-major order. A model with V > 1
views (model.num_views) has V such maps one after the other (view order); the card lays them
side by side, as it lays out the views' images, so a study's map is [h, V * w].

Row k of the result belongs to generated token k: the decoder input is [bos, t_0, ..., t_{T-2}],
and the query at position k is the one whose output predicted t_k, i.e. where the model looked
while writing that token. Weights are not renormalised over the patches: `visual_share` says how
much of each row's attention the patches got (the rest went to prompt tokens).
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cnx2rg_jax import sharding
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.text import tokenizer as tok


def decoder_inputs(token_ids: np.ndarray) -> np.ndarray:
  """Generated ids [B, L] (tokens after bos, eos then pad) -> teacher-forcing inputs [B, L]:
  bos followed by the first L - 1 generated ids."""
  token_ids = np.asarray(token_ids, np.int32)
  bos = np.full((token_ids.shape[0], 1), tok.BOS_ID, np.int32)
  return np.concatenate([bos, token_ids[:, :-1]], axis=1)


def last_cross_attention(intermediates: dict, num_decoder_layers: int) -> jax.Array:
  """The sown [B, heads, T, S] softmax weights of the last decoder layer's cross-attention."""
  name = f"decoder_layers_{num_decoder_layers - 1}"
  try:
    return intermediates["transformer"][name]["src_attn"]["attention_probs"][0]
  except KeyError as e:
    raise KeyError(f"no sown attention at intermediates['transformer'][{name!r}]['src_attn']"
                   f"['attention_probs'] (missing key {e}); does MultiHeadAttention.attend still "
                   "sow its weights?") from None


def grid_shape(num_patches: int) -> tuple[int, int]:
  """(h, w) of a square feature map of `num_patches` cells (images are square crops)."""
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise ValueError(f"{num_patches} visual patches do not make a square feature map")
  return side, side


def num_patches(model: CNX2RG, variables, crop_size: int) -> int:
  """The number of ResNet patch tokens of one study of crop_size x crop_size images, all its
  views together (shapes only)."""
  images = jax.ShapeDtypeStruct(model.config.image_shape(1, crop_size), jnp.float32)
  patches, _ = jax.eval_shape(
      lambda v, x: model.apply(v, x, method=lambda m, y: m.visual(y, train=False)),
      variables, images)
  return int(patches.shape[1])


def side_by_side(maps: np.ndarray, views: int, grid: tuple[int, int]) -> np.ndarray:
  """[..., V * h * w] patch weights (view after view, each row-major) -> [..., h, V * w], the
  views' maps side by side."""
  h, w = grid
  lead = maps.shape[:-1]
  m = maps.reshape(*lead, views, h, w)
  return np.moveaxis(m, -3, -2).reshape(*lead, h, views * w)


def attention_fn(model: CNX2RG, k: int):
  """The jittable (variables, images [B,H,W,1] or [B,V,H,W,1], inputs [B,T]) -> (maps [B,T,K]
  float32 head means over the K visual keys (all views'), visual_share [B,T])."""
  n_layers = model.config.num_decoder_layers

  def fn(variables, images, inputs):
    _, state = model.apply(variables, images, inputs, mutable=["intermediates"])
    probs = last_cross_attention(state["intermediates"], n_layers).astype(jnp.float32)
    mean = probs.mean(axis=1)  # [B, T, S]
    return mean[..., :k], mean[..., :k].sum(-1)

  return fn


class AttentionReader:
  """Cross-attention maps for rows of (images, generated ids), in fixed global batches (one
  compiled shape), data-parallel on `mesh` like `inference.generate.ReportGenerator`."""

  def __init__(self, model: CNX2RG, variables, mesh, crop_size: int, batch_size: int):
    self.model, self.mesh = model, mesh
    self.k = num_patches(model, variables, crop_size)  # all views' patches
    self.views = model.config.num_views
    self.view_grid = grid_shape(self.k // self.views)
    self.grid = (self.view_grid[0], self.views * self.view_grid[1])  # views side by side
    self.batch_size = batch_size
    self.local_batch = batch_size // jax.process_count()
    self._fn = jax.jit(attention_fn(model, self.k))

  def maps(self, variables, images: np.ndarray, token_ids: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """images [N, H, W, 1] (or [N, V, H, W, 1]) float32 and generated ids [N, L], the same on
    every process -> (maps [N, L, h, V * w], visual_share [N, L]). Every process must call it
    (collective)."""
    n = len(images)
    inputs = decoder_inputs(token_ids)
    maps, shares = [], []
    p, me = jax.process_count(), jax.process_index()
    for start in range(0, max(n, 1), self.batch_size):
      rows = np.arange(start, min(start + self.batch_size, n))
      mine = rows[me * self.local_batch:(me + 1) * self.local_batch]
      pad = self.local_batch - len(mine)
      img = np.concatenate([images[mine], np.zeros((pad, *images.shape[1:]), np.float32)])
      ids = np.concatenate([inputs[mine], np.zeros((pad, inputs.shape[1]), np.int32)])
      index = np.concatenate([mine, np.full((pad,), -1, np.int64)])
      batch = sharding.global_batch({"image": img.astype(np.float32), "ids": ids}, self.mesh)
      out = list(self._fn(variables, batch["image"], batch["ids"]))
      if p > 1:
        out = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in out]
        index = np.asarray(multihost_utils.process_allgather(index, tiled=True))
      else:
        out = [np.asarray(x) for x in out]
      keep = index >= 0  # rows come back in process order; padding rows are dropped
      order = np.argsort(index[keep], kind="stable")
      maps.append(out[0][keep][order])
      shares.append(out[1][keep][order])
    m = np.concatenate(maps)[:n] if n else np.zeros((0, inputs.shape[1], self.k), np.float32)
    s = np.concatenate(shares)[:n] if n else np.zeros((0, inputs.shape[1]), np.float32)
    return side_by_side(m, self.views, self.view_grid), s

