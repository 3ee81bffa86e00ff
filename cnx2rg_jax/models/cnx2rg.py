"""CN-X2RG: ResNet patch features (+ prompts) -> R2Gen's memory-driven Transformer, plus the
keyword classification head of the paper's auxiliary loss.

Two entry points share every parameter:
- `__call__(images, tokens)`: teacher-forced token logits and keyword logits (training);
- `encode(images)` -> `decode_constants(memory)` and `init_cache(memory, max_len)` ->
  `decode_step(token, cache, constants)` repeatedly (decoding; each step costs one token, not the
  whole prefix).

With `config.prompt_encoder` set, the submodule `prompt_encoder` (MedCLIP's frozen ResNet-50,
models/prompt_encoder.py) computes the prompt features from the same images whenever the caller
passes none; its output goes through `jax.lax.stop_gradient`, so its parameters get exactly zero
gradients (the optimizer's 'frozen' group also gives them zero updates, and its BatchNorm always
uses the converted running statistics). Its variables are params['prompt_encoder'] and
batch_stats['prompt_encoder'], loaded by `training.state` when the train state is created.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import flax.linen as nn
import jax

from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.prompt import KeywordHead, PromptFusion
from cnx2rg_jax.models.prompt_encoder import MedCLIPImageEncoder
from cnx2rg_jax.models.resnet import VisualEncoder
from cnx2rg_jax.models.transformer import ReportTransformer


class CNX2RG(nn.Module):
  config: ModelConfig
  frozen_bn: bool = False  # BatchNorm always on running statistics (fine-tuning, small batches)
  r2gen_layernorm: bool = False  # R2Gen's LayerNorm (unbiased std + eps) everywhere
  # The input pipeline's data.normalization: the frozen prompt encoder maps it to MedCLIP's.
  image_normalization: str = "zscore"
  # The encoder-decoder on top of the visual side; CMNModel (models/cmn.py) swaps in its own.
  transformer_class: ClassVar[type] = ReportTransformer

  def setup(self):
    self.visual = VisualEncoder(self.config, frozen_bn=self.frozen_bn)
    if self.config.prompt_encoder:
      self.prompt_encoder = MedCLIPImageEncoder(
          image_size=self.config.prompt_encoder_image_size,
          input_normalization=self.image_normalization, dtype=self.config.compute_dtype)
    self.prompt = PromptFusion(self.config)
    self.keyword_head = KeywordHead(self.config)
    if self.config.r2gen_rgb_stem and self.image_normalization != "imagenet":
      raise ValueError("model.r2gen_rgb_stem needs data.normalization='imagenet' (the 3-channel "
                       f"stem undoes it exactly), got {self.image_normalization!r}")
    self.transformer = self.transformer_class(
        self.config, r2gen_layernorm=self.r2gen_layernorm or self.config.r2gen_layernorm,
        att_embed_dropout=self.config.visual_dropout)

  def frozen_prompt_features(self, images: jax.Array,
                             prompt_features: Optional[jax.Array] = None) -> Optional[jax.Array]:
    """`prompt_features` when given; else the frozen encoder's [B, 1, 512] (gradient stopped)
    when `config.prompt_encoder` is set; else None."""
    if prompt_features is None and self.config.prompt_encoder:
      if images.ndim != 4:
        raise ValueError("the frozen prompt encoder takes one view [B, H, W, 1]; got images "
                         f"of shape {images.shape}")
      prompt_features = jax.lax.stop_gradient(self.prompt_encoder(images))
    return prompt_features

  def visual_features(self, images: jax.Array, prompt_features: Optional[jax.Array] = None,
                      train: bool = False) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, 1], or [B, V, H, W, 1] for V views -> (fused visual tokens [B, N, d_vf],
    keyword logits [B, 48]); with V views the ResNet runs on each and N = V * patches (see
    VisualEncoder)."""
    patches, pooled = self.visual(images, train=train)
    prompt_features = self.frozen_prompt_features(images, prompt_features)
    return (self.prompt(patches, prompt_features),
            self.keyword_head(pooled, deterministic=not train))

  def __call__(self, images: jax.Array, tokens: jax.Array,
               prompt_features: Optional[jax.Array] = None, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """Teacher forcing: (token logits [B, T, vocab], keyword logits [B, 48]), both float32."""
    feats, keyword_logits = self.visual_features(images, prompt_features, train)
    return self.transformer(feats, tokens, deterministic=not train), keyword_logits

  def encode(self, images: jax.Array, prompt_features: Optional[jax.Array] = None
             ) -> tuple[jax.Array, jax.Array]:
    """Eval-mode encoding: (encoder memory [B, N, d_model], keyword logits [B, 48])."""
    feats, keyword_logits = self.visual_features(images, prompt_features, train=False)
    return self.transformer.encode(feats), keyword_logits

  def encode_with_features(self, images: jax.Array, prompt_features: Optional[jax.Array] = None
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`encode` plus the ResNet's pooled features [B, d_vf] (for retrieval), in one pass."""
    patches, pooled = self.visual(images, train=False)
    feats = self.prompt(patches, self.frozen_prompt_features(images, prompt_features))
    keyword_logits = self.keyword_head(pooled, deterministic=True)
    return self.transformer.encode(feats), keyword_logits, pooled

  def encode_features(self, visual_feats: jax.Array) -> jax.Array:
    """Encoder memory from precomputed visual tokens [B, N, d_vf] (skips the ResNet)."""
    return self.transformer.encode(visual_feats)

  def decode_logits(self, memory: jax.Array, tokens: jax.Array) -> jax.Array:
    """Teacher-forced logits [B, T, vocab] given the encoder memory (eval mode)."""
    return self.transformer.decode_logits(memory, tokens)

  def decode_constants(self, memory: jax.Array):
    """What every decode step reads and none changes (cross-attention keys/values per example,
    the stacked MCLN weights); see ReportTransformer.decode_constants."""
    return self.transformer.decode_constants(memory)

  def init_cache(self, memory: jax.Array, max_len: int):
    return self.transformer.init_cache(memory, max_len)

  def decode_step(self, token: jax.Array, cache, constants):
    """token [R] (R a multiple of the examples of `constants`) -> (next-token logits [R, vocab]
    float32, cache)."""
    return self.transformer.decode_step(token, cache, constants)
