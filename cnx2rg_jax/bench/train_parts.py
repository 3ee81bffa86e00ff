"""Where a train step's time goes, part by part, for our model and for R2Gen's
(`python -m cnx2rg_jax.bench.r2gen_side_by_side --parts`).

Ours: each part is its own jitted function of the same shapes as in the train step (train-mode
BatchNorm and dropout), forward and backward (gradients of its own parameters and of its inputs,
as the step's backward pass computes them): the ResNet (forward alone too), the encoder (att_embed
+ layers), the relational memory (its scan over the report), the decoder layers (MCLN included),
the final norm + logits + token loss, and the optimizer update. R2Gen's: its visual extractor
(forward alone too), its encoder-decoder with the loss, and the Adam step. The parts add up to
about the whole step; each runs on its own, so fusion across parts and the memory traffic between
them are not in any one of them. Each entry is `timing.timed`'s (min/median wall and CPU seconds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cnx2rg_jax.bench.timing import timed
from cnx2rg_jax.models.layers import causal_mask
from cnx2rg_jax.training.steps import token_loss


def _transformer_subtree(params: dict, prefixes: tuple[str, ...]) -> dict:
  return {k: v for k, v in params["transformer"].items() if k.startswith(prefixes)}


def our_parts(side, warmup: int, repeats: int) -> dict:
  """{part: timed(...)} for an OurSide (r2gen_side_by_side.OurSide)."""
  model, state, batch = side.model, side.state, side.batch
  params, stats = state.params, state.batch_stats
  key = jax.random.key(0)
  tokens = batch["report_tokens"]
  inputs = tokens[:, :-1]
  rngs = {"dropout": key}

  def visual(p, images):
    (patches, _), _ = model.apply({"params": {**params, "visual": p}, "batch_stats": stats},
                                  images, train=True, mutable=["batch_stats"],
                                  method=lambda m, x, train: m.visual(x, train=train))
    return patches

  def transformer(method):
    def run(sub, *args):
      return model.apply({"params": {**params, "transformer": {**params["transformer"], **sub}}},
                         *args, rngs=rngs, method=method)
    return run

  # The activations each part starts from, computed once (as the step's forward would).
  feats = jax.jit(visual)(params["visual"], batch["image"])
  memory = jax.jit(transformer(lambda m, f: m.transformer.encode(f, False)))({}, feats)
  embed = jax.jit(transformer(lambda m, t: m.transformer.embed(
      t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape), t.shape[1])))({}, inputs)
  rm_out = jax.jit(transformer(lambda m, e: m.transformer.rm(e, False)))({}, embed)

  def decoder_layers(m, x, rm_out, memory):
    t = m.transformer
    cross = [layer.cross_kv(memory) for layer in t.decoder_layers]
    mlps = t._norm_mlps()  # pylint: disable=protected-access
    return t._decode_layers(  # pylint: disable=protected-access
        x, rm_out, mlps, cross, causal_mask(x.shape[1]), False)[0]

  def head(m, x):
    return token_loss(m.transformer.logit(m.transformer.decoder_norm(x)).astype(jnp.float32),
                      tokens, batch["report_mask"])

  def fwd_bwd(fn, sub, *args):
    """Gradients of sum(fn * cotangent) w.r.t. the part's parameters and its inputs."""
    def loss(sub, *args):
      out = fn(sub, *args)
      return jnp.sum(out * jnp.ones_like(out) * 1e-3)
    grad = jax.jit(jax.grad(loss, argnums=tuple(range(1 + len(args)))))
    return lambda: jax.block_until_ready(grad(sub, *args))

  x = embed.astype(jnp.float32)
  parts = {
      "resnet_forward": lambda: jax.block_until_ready(
          jax.jit(visual)(params["visual"], batch["image"])),
      "resnet_forward_backward": fwd_bwd(visual, params["visual"], batch["image"]),
      "encoder_forward_backward": fwd_bwd(
          transformer(lambda m, f: m.transformer.encode(f, False)),
          _transformer_subtree(params, ("att_embed", "encoder_")), feats),
      "relational_memory_forward_backward": fwd_bwd(
          transformer(lambda m, e: m.transformer.rm(e, False)),
          _transformer_subtree(params, ("rm",)), embed),
      "decoder_layers_forward_backward": fwd_bwd(
          transformer(decoder_layers), _transformer_subtree(params, ("decoder_layers_",)),
          x, rm_out, memory),
      "logits_and_loss_forward_backward": fwd_bwd(
          transformer(head), _transformer_subtree(params, ("decoder_norm", "logit")), x),
  }
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(lambda g, o, p: optax.apply_updates(p, side.tx.update(g, o, p)[0]))
  parts["optimizer_update"] = lambda: jax.block_until_ready(
      update(grads, side.state.opt_state, side.state.params))
  out = {name: timed(fn, warmup, repeats) for name, fn in parts.items()}
  out["train_step"] = timed(side.train_step, warmup, repeats)
  return out


def r2gen_parts(side, warmup: int, repeats: int) -> dict:
  """{part: timed(...)} for an R2GenSide (r2gen_side_by_side.R2GenSide)."""
  torch, model = side.torch, side.model
  model.train()
  images, ids, masks = side.images, side.report_ids, side.report_masks

  def resnet_forward():
    with torch.no_grad():
      model.visual_extractor(images)

  def resnet_forward_backward():
    att, fc = model.visual_extractor(images)
    (att.sum() * 1e-3 + fc.sum() * 1e-3).backward()

  att_feats, fc_feats = (t.detach() for t in model.visual_extractor(images))

  def encoder_decoder_forward_backward():
    out = model.encoder_decoder(fc_feats, att_feats, ids, mode="forward")
    side.compute_loss(out, ids, masks).backward()

  def optimizer_step():
    side.optimizer.step()

  parts = {"resnet_forward": resnet_forward, "resnet_forward_backward": resnet_forward_backward,
           "encoder_decoder_and_loss_forward_backward": encoder_decoder_forward_backward,
           "optimizer_step": optimizer_step}
  out = {name: timed(fn, warmup, repeats) for name, fn in parts.items()}
  out["train_step"] = timed(side.train_step, warmup, repeats)
  model.zero_grad()
  return out
