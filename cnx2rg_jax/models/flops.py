"""CN-X2RG's FLOPs per example, counted analytically from the config (for MFU).

Only matrix products and convolutions are counted, each as 2 x multiply-adds; normalisation,
activations, softmax and the other elementwise work are left out (a few per cent at the paper's
dims). Teacher forcing over T tokens with N visual tokens:

  ResNet         sum over convolutions of 2 * H_out * W_out * k * k * C_in * C_out
  keyword head   2 * d_vf * 48; prompt projection 2 * P * prompt_feature_dim * d_vf
  att_embed      2 * N * d_vf * d
  encoder layer  attention 2 * N * d * d * 4 (q, k, v, out) + 2 * 2 * N * N * d (scores, mix);
                 feed-forward 2 * 2 * N * d * d_ff
  rel. memory    per token, S slots: q, out, mlp1, mlp2 on S rows 2 * 4 * S * d * d; k, v on
                 S + 1 rows 2 * 2 * (S + 1) * d * d; scores and mix 2 * 2 * S * (S + 1) * d;
                 gates 2 * (S + 1) * d * 2d
  decoder layer  per token: 3 MCLNs x 2 MLPs x 2 * (S * d * d + d * d); self-attention
                 2 * 4 * d * d + 2 * 2 * T * d (scores and mix over all T: the causal mask is
                 applied to a full T x T product); cross-attention 2 * 2 * d * d (q, out) +
                 2 * 2 * N * d (scores, mix); feed-forward 2 * 2 * d * d_ff; plus, per example,
                 the cross keys and values 2 * 2 * N * d * d
  logits         2 * T * d * vocab
R2GenCMN (model.architecture="cmn", models/cmn.py) has no relational memory and plain norms (no
MCLN MLPs in its decoder layers); its cross-modal memory of M rows, top k, costs per call on R
features (the visual tokens, then the tokens): the memory's keys and values 2 * 2 * M * d * d,
queries and output 2 * 2 * R * d * d, scores against every row 2 * R * M * d, the mix of the
k kept rows 2 * R * k * d.

A training step costs 3x the forward pass (the backward pass is twice the forward), except the
frozen prompt encoder, whose forward pass is counted once. `tests/test_flops.py` checks each
part against XLA's own count of the compiled computation.
"""

from __future__ import annotations

import math

from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.resnet import RESNET_LAYERS, STAGE_WIDTHS

NUM_KEYWORDS = 48
MEDCLIP_DEPTH, MEDCLIP_FEATURES, MEDCLIP_PROJECTION = 50, 2048, 512


def _half(size: int) -> int:
  """The output side of a stride-2 convolution or pooling with 'same'-style padding."""
  return math.ceil(size / 2)


def _conv(h: int, w: int, k: int, c_in: int, c_out: int) -> int:
  return 2 * h * w * k * k * c_in * c_out


def resnet_flops(depth: int, width: int, image_size: int, in_channels: int = 1) -> int:
  """Forward FLOPs of models.resnet.ResNet on one image_size x image_size image."""
  kind, blocks = RESNET_LAYERS[depth]
  scale = lambda c: c * width // STAGE_WIDTHS[0]  # noqa: E731
  side = _half(image_size)
  total = _conv(side, side, 7, in_channels, scale(64))
  side = _half(side)  # max pool
  c_in = scale(64)
  for stage, (planes, n) in enumerate(zip(STAGE_WIDTHS, blocks)):
    planes = scale(planes)
    for j in range(n):
      stride = 2 if (stage > 0 and j == 0) else 1
      out_side = _half(side) if stride == 2 else side
      if kind == "basic":
        c_out = planes
        total += _conv(out_side, out_side, 3, c_in, planes)
        total += _conv(out_side, out_side, 3, planes, planes)
      else:
        c_out = 4 * planes
        total += _conv(side, side, 1, c_in, planes)
        total += _conv(out_side, out_side, 3, planes, planes)
        total += _conv(out_side, out_side, 1, planes, c_out)
      if stride != 1 or c_in != c_out:
        total += _conv(out_side, out_side, 1, c_in, c_out)
      c_in, side = c_out, out_side
  return total


def patch_count(image_size: int) -> int:
  """Visual patches of the ResNet's last feature map (stride 32)."""
  side = image_size
  for _ in range(5):
    side = _half(side)
  return side * side


def visual_tokens(cfg: ModelConfig, image_size: int) -> int:
  return patch_count(image_size) + cfg.num_prompts + (1 if cfg.prompt_feature_dim else 0)


def encoder_layer_flops(n: int, d: int, d_ff: int) -> int:
  return 2 * n * d * d * 4 + 2 * 2 * n * n * d + 2 * 2 * n * d * d_ff


def memory_step_flops(slots: int, d: int) -> int:
  """One relational-memory update."""
  return (2 * 4 * slots * d * d + 2 * 2 * (slots + 1) * d * d + 2 * 2 * slots * (slots + 1) * d
          + 2 * (slots + 1) * d * 2 * d)


def cmn_memory_flops(rows: int, cmm_size: int, d: int, topk: int) -> int:
  """R2GenCMN's memory querying and responding for `rows` features (one call)."""
  return 2 * 2 * cmm_size * d * d + rows * (2 * 2 * d * d + 2 * cmm_size * d + 2 * topk * d)


def decoder_layer_flops(t: int, n: int, d: int, d_ff: int, slots: int,
                        conditional: bool = True) -> int:
  """One decoder layer; `conditional=False`: plain norms (R2GenCMN's), no MCLN MLPs."""
  per_token = (3 * 2 * 2 * (slots * d * d + d * d) * conditional  # MCLN MLPs
               + 2 * 4 * d * d + 2 * 2 * t * d  # self-attention
               + 2 * 2 * d * d + 2 * 2 * n * d  # cross-attention (q, out; scores, mix)
               + 2 * 2 * d * d_ff)
  return t * per_token + 2 * 2 * n * d * d  # + the cross keys and values


def forward_flops(cfg: ModelConfig, image_size: int, num_tokens: int) -> dict[str, int]:
  """Forward FLOPs of one example by part, teacher forcing `num_tokens` decoder positions."""
  n, d, t = visual_tokens(cfg, image_size), cfg.d_model, num_tokens
  parts = {
      "resnet": resnet_flops(cfg.resnet_depth, cfg.resnet_width, image_size),
      "keyword_head": 2 * cfg.d_vf * NUM_KEYWORDS,
      "prompt_projection": 2 * cfg.prompt_feature_dim * cfg.d_vf if cfg.prompt_feature_dim else 0,
      "att_embed": 2 * n * cfg.d_vf * d,
      "encoder": cfg.num_encoder_layers * encoder_layer_flops(n, d, cfg.d_ff),
      "relational_memory": t * memory_step_flops(cfg.rm_num_slots, cfg.rm_d_model),
      "decoder": cfg.num_decoder_layers * decoder_layer_flops(t, n, d, cfg.d_ff,
                                                              cfg.rm_num_slots),
      "logits": 2 * t * d * cfg.vocab_size,
  }
  if cfg.architecture == "cmn":
    del parts["relational_memory"]
    parts["cross_modal_memory"] = (cmn_memory_flops(n, cfg.cmm_size, d, cfg.cmn_topk)
                                   + cmn_memory_flops(t, cfg.cmm_size, d, cfg.cmn_topk))
    parts["decoder"] = cfg.num_decoder_layers * decoder_layer_flops(t, n, d, cfg.d_ff, 0,
                                                                    conditional=False)
  return parts


def frozen_encoder_flops(cfg: ModelConfig) -> int:
  """Forward FLOPs of the frozen MedCLIP image encoder (0 when none is configured)."""
  if not cfg.prompt_encoder:
    return 0
  side = cfg.prompt_encoder_image_size
  return (resnet_flops(MEDCLIP_DEPTH, 64, side, in_channels=3)
          + 2 * MEDCLIP_FEATURES * MEDCLIP_PROJECTION)


def train_flops_per_example(cfg: ModelConfig, image_size: int, num_tokens: int) -> int:
  """Forward + backward FLOPs of one training example (3x the trained forward pass)."""
  return 3 * sum(forward_flops(cfg, image_size, num_tokens).values()) + frozen_encoder_flops(cfg)
