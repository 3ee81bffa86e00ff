"""The model's hyper-parameters as a frozen dataclass: what modules take (never a ConfigDict)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

# Channels of a ResNet's layer4 by depth at torchvision's base width 64 (they scale with the width).
RESNET_FEATURES = {18: 512, 34: 512, 50: 2048, 101: 2048}
TORCHVISION_WIDTH = 64
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ARCHITECTURES = ("r2gen", "cmn")  # model.architecture (models/factory.py maps each to its module)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """CN-X2RG dimensions. No field has a default here: models/factory.py's model_config builds
  this from a config's `model` section (configs/cnx2rg.py holds every default: R2Gen's / the
  paper's ResNet-101, d 512, 3+3 layers), with vocab_size, max_len and the keys a config may
  leave out (factory.OPTIONAL_MODEL_KEYS)."""

  vocab_size: int
  max_len: int  # longest token sequence (bos + report + eos) the decoder sees
  num_keywords: int  # outputs of the keyword head (the 48 keywords of text/keywords.py)
  # Visual encoder.
  resnet_depth: int
  # Channels of the ResNet stem and layer1 (torchvision: 64); layer2..4 double it each. Smaller
  # widths are for CPU demos; pretrained torchvision weights need 64.
  resnet_width: int
  # Prompt module: learnable prompt tokens, plus optional frozen image-text encoder features.
  num_prompts: int  # 0 switches the learnable prompts off
  prompt_feature_dim: int  # width of precomputed frozen-encoder features; 0 = none
  # Frozen image-text encoder (models/prompt_encoder.py): a directory written by
  # `python -m cnx2rg_jax.convert.medclip`; "" = none (only the learnable prompts). Its features
  # are 512 wide, so prompt_feature_dim must then be 512.
  prompt_encoder: str
  prompt_encoder_image_size: int  # side the frozen encoder sees (MedCLIP trained at 224)
  # Encoder-decoder Transformer (R2Gen).
  d_model: int
  d_ff: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  dropout: float
  visual_dropout: float  # after att_embed on the visual tokens (R2Gen's drop_prob_lm)
  # Which encoder-decoder: "r2gen" (R2Gen's relational memory and MCLN, CN-X2RG's) or "cmn"
  # (R2GenCMN's cross-modal memory, models/cmn.py); models/factory.py maps the name to the module.
  architecture: str
  # R2GenCMN's memory: cmm_size rows of cmm_dim (= d_model); a query keeps its cmn_topk best rows.
  cmm_size: int
  cmm_dim: int
  cmn_topk: int
  # Relational memory.
  rm_num_slots: int
  rm_num_heads: int
  rm_d_model: int
  # Numerics: parameters are always float32; activations in `dtype`.
  dtype: str
  # R2Gen compatibility: what R2Gen (cuhksz-nlp/R2Gen) does differently from our defaults, one
  # switch a quirk; `python -m cnx2rg_jax.convert.r2gen` and configs/r2gen.py turn them all on.
  # Off unless a config sets them (factory.OPTIONAL_MODEL_KEYS), so configs/cnx2rg.py's configs
  # and checkpoints are unaffected. (R2Gen's sqrt(d_model) embedding scale, MCLN MLP shapes,
  # identity initial memory and plain final norm are our defaults already; IU X-Ray's two views
  # are `num_views` below.)
  # Every norm is (x - mean) / (unbiased std + eps), R2Gen's LayerNorm, instead of nn.LayerNorm's
  # (x - mean) / sqrt(biased var + eps).
  r2gen_layernorm: bool
  # The ResNet stem takes 3 channels, as R2Gen's ImageNet ResNet: the one-channel input (it must
  # be data.normalization="imagenet") is mapped back to [0, 1] pixels and normalised per channel
  # with ImageNet's RGB mean/std, exactly what R2Gen's transforms give a gray image read as RGB.
  r2gen_rgb_stem: bool
  # R2Gen's beam bookkeeping: each step keeps the top beam_size candidates, and those ending in
  # eos finish there and leave their slot empty for that step (they are carried on with 1000
  # taken off their score, as R2Gen does); ours ranks 2 * beam_size and keeps beam_size live.
  r2gen_beam_search: bool
  # Images a study: 1 takes [B, H, W, 1]; V > 1 takes [B, V, H, W, 1], each view through the same
  # ResNet and their patch features concatenated (R2Gen's IU X-Ray model: V = 2).
  num_views: int

  def image_shape(self, batch: int, size: int) -> tuple[int, ...]:
    """The images this model takes: (batch, size, size, 1), or (batch, V, size, size, 1)."""
    views = (self.num_views,) if self.num_views > 1 else ()
    return (batch, *views, size, size, 1)

  @property
  def d_vf(self) -> int:
    """Width of the visual patch features."""
    if self.resnet_depth not in RESNET_FEATURES:
      raise ValueError(f"model.resnet_depth={self.resnet_depth}; choose one of "
                       f"{sorted(RESNET_FEATURES)}")
    if self.resnet_width < 1:
      raise ValueError(f"model.resnet_width={self.resnet_width}; it must be >= 1 (torchvision: 64)")
    return RESNET_FEATURES[self.resnet_depth] * self.resnet_width // TORCHVISION_WIDTH

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]
