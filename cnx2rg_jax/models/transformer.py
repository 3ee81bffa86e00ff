"""ReportTransformer: R2Gen's memory-driven encoder-decoder over visual patch features.

Architecture (read from R2Gen's modules/encoder_decoder.py and att_model.py):
  encode:  att_embed = Linear(d_vf -> d), ReLU, Dropout(0.5, R2Gen's drop_prob_lm); no
           positional encoding (R2Gen's src_embed is the identity); N pre-norm encoder layers
           x + dropout(sublayer(LN(x))); a final LN.
  decode:  y = Embed(token) * sqrt(d) + PE(position), dropout; the relational memory consumes y
           (its own dropout draw, as R2Gen calls tgt_embed twice); N decoder layers whose
           norms are MCLNs conditioned on the memory state after consuming each position's
           token; a final norm (plain LN in R2Gen; `conditional_final_norm` makes it an MCLN);
           a Linear(d -> vocab) logit layer.

Usage (all through `model.apply(params, ..., method=ReportTransformer.<name>)`):
  logits = model.apply(params, feats, tokens)                       # teacher forcing
  mem = model.apply(params, feats, method=ReportTransformer.encode)
  consts = model.apply(params, mem, method=ReportTransformer.decode_constants)
  cache = model.apply(params, mem, max_len, method=ReportTransformer.init_cache)
  logits_t, cache = model.apply(params, token_t, cache, consts,
                                method=ReportTransformer.decode_step)

Decode constants (a dict, computed once per search and never part of its state):
  'cross': tuple, one (keys [B, heads, d_head, N], values [B, heads, N, d_head]) per decoder
           layer: the projected encoder memory, one per example (beams and samples of an example
           share it);
  'mcln':  the decoder's MCLN MLPs stacked into a few products (mcln.StackedMLPs).
Cache (a dict; every non-scalar leaf has the decoded rows as its leading axis, B or B * beams,
so beam search can gather it):
  'pos':    int32 [], the position the next decode_step token occupies (all rows in lockstep);
  'rm':     float32 [R, slots, rm_d], the relational memory after the tokens fed so far;
  'layers': tuple, one dict per decoder layer with
            'self_k': [R, heads, d_head, max_len] self-attention keys and
            'self_v': [R, heads, max_len, d_head] values (positions >= pos are zeros / unused;
                      heads first, keys positions last: the layout the attention reads, see
                      layers.MultiHeadAttention).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.decoder import DecoderLayer, prefix_mask, self_attention_cache
from cnx2rg_jax.models.layers import (TORCH_LINEAR, Embeddings, LayerNorm, MultiHeadAttention,
                                      PositionwiseFeedForward, causal_mask, dense)
from cnx2rg_jax.models.mcln import ConditionalLayerNorm, StackedMLPs, stack_mlps, stacked_shifts
from cnx2rg_jax.models.relational_memory import RelationalMemory

Cache = Dict[str, Any]


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + feed-forward layer (residual stream float32)."""
  config: ModelConfig
  r2gen_layernorm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    c = self.config
    dt = c.compute_dtype
    drop = nn.Dropout(c.dropout)
    x = x.astype(jnp.float32)
    h = LayerNorm(self.r2gen_layernorm, dt, name="norm_attn")(x)
    a = MultiHeadAttention(c.num_heads, c.d_model, c.dropout, dt, name="self_attn")(
        h, h, None, deterministic)
    x = x + drop(a, deterministic=deterministic).astype(jnp.float32)
    h = LayerNorm(self.r2gen_layernorm, dt, name="norm_ff")(x)
    a = PositionwiseFeedForward(c.d_model, c.d_ff, c.dropout, dt, name="ffn")(h, deterministic)
    return x + drop(a, deterministic=deterministic).astype(jnp.float32)


class ReportTransformer(nn.Module):
  """R2Gen's encoder-decoder with relational memory and MCLN (see the module docstring)."""
  config: ModelConfig
  r2gen_layernorm: bool = False  # True: R2Gen's (x - mean) / (unbiased std + eps) norms
  conditional_final_norm: bool = False  # True: the decoder's final norm is an MCLN too
  att_embed_dropout: float = 0.5  # R2Gen's drop_prob_lm default

  def setup(self):
    c = self.config
    dt = c.compute_dtype
    if c.rm_d_model != c.d_model:
      # The memory consumes the token embeddings, and R2Gen's MCLN second Linear is d -> d.
      raise ValueError(f"rm_d_model ({c.rm_d_model}) must equal d_model ({c.d_model})")
    self.att_embed = dense(c.d_model, ("visual", "embed"), dt, kernel_init=TORCH_LINEAR)
    self.att_drop = nn.Dropout(self.att_embed_dropout)
    self.encoder_layers = [EncoderLayer(c, self.r2gen_layernorm)
                           for _ in range(c.num_encoder_layers)]
    self.encoder_norm = LayerNorm(self.r2gen_layernorm, dt)
    self.embed = Embeddings(c.vocab_size, c.d_model, dt)
    self.embed_drop = nn.Dropout(c.dropout)
    self.rm = RelationalMemory(c.rm_num_slots, c.rm_d_model, c.rm_num_heads, c.dropout, dt)
    self.decoder_layers = [DecoderLayer(c, self.r2gen_layernorm)
                           for _ in range(c.num_decoder_layers)]
    if self.conditional_final_norm:
      self.decoder_norm = ConditionalLayerNorm(c.d_model, self.r2gen_layernorm, dt)
    else:
      self.decoder_norm = LayerNorm(self.r2gen_layernorm, dt)
    self.logit = dense(c.vocab_size, ("embed", "vocab"), dt, kernel_init=TORCH_LINEAR)

  def encode(self, visual_feats: jax.Array, deterministic: bool = True) -> jax.Array:
    """visual_feats [B, N, d_vf] -> encoder memory [B, N, d_model] in the compute dtype."""
    x = nn.relu(self.att_embed(visual_feats.astype(self.config.compute_dtype)))
    x = self.att_drop(x, deterministic=deterministic)
    for layer in self.encoder_layers:
      x = layer(x, deterministic)
    return self.encoder_norm(x)

  def _norm_mlps(self) -> StackedMLPs:
    """Every MCLN's MLPs stacked: 3 norms per decoder layer (gamma, beta each), then the final
    norm's when it is conditional; all read the same memory output, so they run together."""
    c = self.config
    width = c.rm_num_slots * c.rm_d_model
    norms = [norm for layer in self.decoder_layers for norm in layer.norms()]
    if self.conditional_final_norm:
      norms.append(self.decoder_norm)
    return stack_mlps([w for norm in norms for w in norm.mlp_weights(width)])

  def _decode_layers(self, x: jax.Array, rm_out: jax.Array, mlps: StackedMLPs, cross, mask,
                     deterministic: bool, caches=None, pos=None):
    """The decoder layers and the final norm + logit layer over x [R, T, d] -> (logits
    [R, T, vocab] float32, each layer's self-attention K/V)."""
    shifts = stacked_shifts(rm_out, mlps, self.config.compute_dtype)  # [R, T, 2 * norms, d]
    shifts = shifts.reshape(shifts.shape[:-2] + (-1, 2, shifts.shape[-1]))
    kvs = []
    for i, layer in enumerate(self.decoder_layers):
      x, kv = layer(x, None, cross[i], mask, deterministic,
                    kv_cache=None if caches is None else caches[i], pos=pos,
                    shifts=shifts[..., 3 * i:3 * i + 3, :, :])
      kvs.append(kv)
    if self.conditional_final_norm:
      h = self.decoder_norm.normalize(x, shifts[..., -1, :, :])
    else:
      h = self.decoder_norm(x)
    return self.logit(h).astype(jnp.float32), kvs

  def decode_logits(self, memory_feats: jax.Array, tokens: jax.Array,
                    deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits [B, T, vocab] float32 for input tokens [B, T] (bos + report[:-1]).

    Causal: the logits at position t depend only on tokens[:, :t+1] (self-attention is masked
    to earlier positions and the relational memory is a forward recurrence). Padding is not
    masked here: with right padding it can only affect positions at or after the padding,
    which the caller's loss mask drops (R2Gen also masks pad keys, with the same effect on
    non-pad positions).
    """
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t)[None, :], tokens.shape)
    e = self.embed(tokens, positions, t)
    rm_out = self.rm(self.embed_drop(e, deterministic=deterministic), deterministic)
    x = self.embed_drop(e, deterministic=deterministic)
    cross = [layer.cross_kv(memory_feats) for layer in self.decoder_layers]
    logits, _ = self._decode_layers(x, rm_out, self._norm_mlps(), cross, causal_mask(t),
                                    deterministic)
    return logits

  def __call__(self, visual_feats: jax.Array, tokens: jax.Array,
               deterministic: bool = True) -> jax.Array:
    """encode + decode_logits: visual_feats [B, N, d_vf], tokens [B, T] -> [B, T, vocab]."""
    return self.decode_logits(self.encode(visual_feats, deterministic), tokens, deterministic)

  def decode_constants(self, memory_feats: jax.Array) -> Dict[str, Any]:
    """What every decode step reads and none changes (see the module docstring), from the
    encoder memory [B, N, d]."""
    return {"cross": tuple(layer.cross_kv(memory_feats) for layer in self.decoder_layers),
            "mcln": self._norm_mlps()}

  def init_cache(self, memory_feats: jax.Array, max_len: int) -> Cache:
    """The decode cache before the first token, one row per example of memory_feats [B, N, d]
    (see the module docstring for its layout). `max_len` (static) bounds the decode steps."""
    c = self.config
    b = memory_feats.shape[0]
    layers = tuple(self_attention_cache(b, max_len, c) for _ in self.decoder_layers)
    return {"pos": jnp.zeros((), jnp.int32), "rm": self.rm.initial_state(b), "layers": layers}

  def decode_step(self, token: jax.Array, cache: Cache, constants: Dict[str, Any],
                  deterministic: bool = True) -> Tuple[jax.Array, Cache]:
    """Feeds token [R] int32 at position cache['pos'] -> (logits [R, vocab] float32, cache').

    R is a multiple of the examples B of `constants` (from `decode_constants`): rows b * K to
    b * K + K - 1 decode example b (its beams or samples). Equal to the teacher-forced logits at
    that position given the tokens fed before. Costs one relational-memory step and attention
    over the cached prefix; pos must stay < max_len.
    """
    pos = cache["pos"]
    max_len = cache["layers"][0]["self_k"].shape[-1]
    positions = jnp.broadcast_to(pos, token.shape)[:, None]
    e = self.embed(token[:, None], positions, max_len)  # [R, 1, d]
    new_rm = self.rm.step(cache["rm"], self.embed_drop(e, deterministic=deterministic)[:, 0],
                          deterministic)
    rm_out = new_rm.reshape(new_rm.shape[0], 1, -1)
    x = self.embed_drop(e, deterministic=deterministic)
    caches = [(lc["self_k"], lc["self_v"]) for lc in cache["layers"]]
    logits, kvs = self._decode_layers(x, rm_out, constants["mcln"], constants["cross"],
                                      prefix_mask(pos, max_len), deterministic, caches, pos)
    layers = tuple({"self_k": k, "self_v": v} for k, v in kvs)
    return logits[:, 0], {"pos": pos + 1, "rm": new_rm, "layers": layers}
