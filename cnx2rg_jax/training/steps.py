"""The loss and the jitted, sharded train step.

Loss = masked token cross-entropy (R2Gen's: the logits at positions 0..T-2 predict tokens
1..T-1, averaged over the reference tokens after BOS, EOS included) + keyword_weight x the
keyword head's binary cross-entropy, averaged over the (report, keyword) entries that count:
a keyword's target is 1 when the report states it positive and 0 when negated or not mentioned;
uncertain mentions (-1) are left out, and so are reports without keyword labels
(`has_keyword_labels` false: a release entry that no annotator labelled), whose "not mentioned"
codes are no statement at all.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cnx2rg_jax import sharding
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.training.state import TrainState


def token_loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean CE of logits [B, T-1, V] against tokens[:, 1:] where mask[:, 1:] is set."""
  targets, weights = tokens[:, 1:], mask[:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def keyword_loss(logits: jax.Array, labels: jax.Array, has_labels: jax.Array) -> jax.Array:
  """Mean BCE of keyword logits [B, 48] against keyword codes [B, 48] of the reports whose
  `has_labels` [B] is set (see module doc); 0 when no entry counts."""
  targets = (labels == kw.POSITIVE).astype(jnp.float32)
  weights = ((labels != kw.UNCERTAIN) & has_labels[:, None]).astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
  return jnp.sum(bce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def loss_fn(model: nn.Module, keyword_weight: float) -> Callable:
  """(params, batch_stats, batch, dropout_key) -> (loss, (aux dict, new batch_stats))."""
  def loss(params, batch_stats, batch, key):
    variables = {"params": params}
    mutable = []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"]
    tokens = batch["report_tokens"]
    (logits, kw_logits), updates = model.apply(
        variables, batch["image"], tokens[:, :-1], train=True, rngs={"dropout": key},
        mutable=mutable)
    t_loss = token_loss(logits, tokens, batch["report_mask"])
    k_loss = keyword_loss(kw_logits, batch["keyword_labels"], batch["has_keyword_labels"])
    total = t_loss + keyword_weight * k_loss
    return total, ({"loss": total, "token_loss": t_loss, "keyword_loss": k_loss},
                   updates.get("batch_stats", batch_stats))
  return loss


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                    state_shardings: TrainState, batch_shapes: dict[str, Any], *,
                    keyword_weight: float, dropout_seed: int,
                    lr_fn: Callable[[jax.Array], jax.Array]) -> Callable:
  """jit(step)(state, batch) -> (state, metrics), with explicit shardings; state donated.

  `batch_shapes` maps each batch key to its global shape (leading axis = global batch);
  metrics are replicated scalars: loss, token_loss, keyword_loss, grad_norm, learning_rate,
  finite (0.0 when the loss or a gradient is NaN/Inf: the returned state is then spoilt, and
  the caller stops without saving it, keeping the last good checkpoint).
  """
  loss = loss_fn(model, keyword_weight)
  base_key = jax.random.key(dropout_seed)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(base_key, state.step)
    (_, (aux, new_stats)), grads = jax.value_and_grad(loss, has_aux=True)(
        state.params, state.batch_stats, batch, key)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(aux["loss"]) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(step=state.step + 1, params=params, batch_stats=new_stats,
                     opt_state=opt_state)
    metrics = {**aux, "grad_norm": grad_norm, "learning_rate": lr_fn(state.step),
               "finite": finite.astype(jnp.float32)}
    return new, metrics

  batch_shardings = {k: sharding.batch_sharding(mesh, len(s)) for k, s in batch_shapes.items()}
  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))
