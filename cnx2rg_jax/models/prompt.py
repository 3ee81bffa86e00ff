"""Prompt training (learnable prompt tokens + frozen image-text features) and the keyword head.

PromptFusion appends extra tokens to the visual patch sequence before the encoder-decoder sees it:
  * `config.num_prompts` learnable prompt tokens of width d_vf (shared across the batch), and
  * optionally, features of a frozen image-text encoder, [B, P, prompt_feature_dim], projected to
    d_vf by a Dense layer. With `model.prompt_encoder` set, `CNX2RG` computes them with MedCLIP's
    frozen ResNet-50 (models/prompt_encoder.py: P = 1, prompt_feature_dim = 512); callers may
    also pass precomputed ones.
Token order is [patch features | learnable prompts | projected frozen features]. With
num_prompts == 0 and no features the module is the identity (the ablation with prompts off).

Logical axes: prompts ('prompts', 'visual'); feature projection kernel ('prompt_features',
'visual'), bias ('visual',); keyword head kernel ('visual', 'keywords'), bias ('keywords',).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from cnx2rg_jax.models.config import ModelConfig


class PromptFusion(nn.Module):
  """[B, K, d_vf] patch features (+ optional [B, P, prompt_feature_dim]) -> [B, K + num_prompts + P, d_vf].

  Output dtype is `config.compute_dtype`. Raises ValueError when features are given but
  `config.prompt_feature_dim == 0`, or when their shape does not fit ([B, P, prompt_feature_dim]
  with the patch features' batch size).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, patch_features, prompt_features: Optional[jnp.ndarray] = None):
    cfg = self.config
    dtype = cfg.compute_dtype
    d_vf = cfg.d_vf
    if patch_features.ndim != 3 or patch_features.shape[-1] != d_vf:
      raise ValueError(f"PromptFusion: patch features must be [B, K, {d_vf}]; "
                       f"got {patch_features.shape}")
    if cfg.num_prompts == 0 and prompt_features is None:
      return patch_features  # switched off: untouched, not even cast
    batch = patch_features.shape[0]
    tokens = [patch_features.astype(dtype)]
    if cfg.num_prompts > 0:
      prompts = self.param(
          "prompts",
          nn.with_logical_partitioning(nn.initializers.normal(0.02), ("prompts", "visual")),
          (cfg.num_prompts, d_vf), jnp.float32)
      tokens.append(jnp.broadcast_to(prompts.astype(dtype), (batch, cfg.num_prompts, d_vf)))
    if prompt_features is not None:
      if cfg.prompt_feature_dim == 0:
        raise ValueError("PromptFusion: frozen image-text features were passed but "
                         "config.prompt_feature_dim == 0; set it to their width")
      if (prompt_features.ndim != 3 or prompt_features.shape[0] != batch
          or prompt_features.shape[-1] != cfg.prompt_feature_dim):
        raise ValueError(f"PromptFusion: prompt features must be [{batch}, P, "
                         f"{cfg.prompt_feature_dim}] (prompt_feature_dim); "
                         f"got {tuple(prompt_features.shape)}")
      proj = nn.Dense(
          d_vf, dtype=dtype, param_dtype=jnp.float32,
          kernel_init=nn.with_logical_partitioning(
              nn.initializers.lecun_normal(), ("prompt_features", "visual")),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("visual",)),
          name="feature_proj")
      tokens.append(proj(prompt_features.astype(dtype)))
    return jnp.concatenate(tokens, axis=1)


class KeywordHead(nn.Module):
  """Pooled visual features [B, d_vf] -> multilabel keyword logits [B, num_keywords], float32.

  Dropout (rate `dropout_rate`) is applied before the Dense unless `deterministic`; it then needs
  a 'dropout' RNG. Logits are float32 (computed in float32) so the sigmoid loss is stable in
  bfloat16 runs.
  """
  config: ModelConfig
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, pooled, deterministic: bool = True):
    cfg = self.config
    if pooled.ndim != 2 or pooled.shape[-1] != cfg.d_vf:
      raise ValueError(f"KeywordHead: pooled features must be [B, {cfg.d_vf}]; got {pooled.shape}")
    x = pooled.astype(jnp.float32)
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return nn.Dense(
        cfg.num_keywords, dtype=jnp.float32, param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("visual", "keywords")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("keywords",)),
        name="classifier")(x)
