"""R2GenCMN's checkpoint (cuhksz-nlp/R2GenCMN's model_best.pth) -> our Flax variables of
models/cmn.py's CMNModel.

Its trainer saves what R2Gen's does ({'epoch', 'state_dict', 'optimizer', 'monitor_best'};
`r2gen_weights.read_checkpoint` reads it). The state_dict's tensors and where they go:
  visual_extractor.model.{0,1,4,5,6,7}.*   torchvision's conv1, bn1, layer1..4 -> visual/resnet
  encoder_decoder.att_embed.0              Linear(d_vf -> d)    -> transformer/att_embed
  encoder_decoder.logit                    Linear(d -> V + 1)   -> transformer/logit (rows mapped)
  encoder_decoder.memory_matrix            [cmm_size, cmm_dim]  -> transformer/cmn/memory
  encoder_decoder.cmn.linears.{0,1,2,3}    -> transformer/cmn/{query,key,value,out}; the same
        module is also registered as encoder_decoder.model.cmn, so torch saves it twice: both
        copies must be equal
  encoder_decoder.model.tgt_embed.0.lut    Embedding(V + 1, d)  -> transformer/embed/lut (rows
                                           mapped)
  encoder_decoder.model.{src,tgt}_embed.*.pe  sinusoid buffers: checked against ours, not stored
  ....{encoder,decoder}.layers.I.{self_attn,src_attn}.linears.J, feed_forward.w_K as R2Gen's
  ....encoder.layers.I.sublayer.{0,1}.norm.{a_2,b_2}   -> encoder_layers_I/norm_{attn,ff}/...
  ....decoder.layers.I.sublayer.{0,1,2}.norm.{a_2,b_2} -> decoder_layers_I/norm_{self,src,ff}/...
                                           (a_2 -> scale, b_2 -> bias)
  ....{encoder,decoder}.norm.{a_2,b_2}     -> {encoder,decoder}_norm/{scale,bias}
A tensor of R2Gen's relational memory (model.rm.*) means an R2Gen checkpoint, refused with the
command that converts it; any other unplaced tensor, unfilled parameter or shape mismatch is an
error naming it.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

import numpy as np

from cnx2rg_jax.convert import r2gen_weights as r2w
from cnx2rg_jax.convert.r2gen_weights import ConversionError

ED = "encoder_decoder."
MEMORY = ED + "memory_matrix"
LUT = ED + "model.tgt_embed.0.lut.weight"
_NORM = {"a_2": "scale", "b_2": "bias"}
_ATTN = {"0": "query", "1": "key", "2": "value", "3": "out"}
_LINEAR = {"weight": "kernel", "bias": "bias"}
R2GEN_MARK = ED + "model.rm."  # R2Gen's relational memory: not an R2GenCMN checkpoint
# R2Gen's converter's tensor lookup, with its messages
need = r2w._need  # pylint: disable=protected-access


def check_architecture(sd: Mapping[str, np.ndarray]) -> None:
  """Raises ConversionError unless `sd` is R2GenCMN's (its memory matrix, no relational memory)."""
  if any(n.startswith(R2GEN_MARK) for n in sd):
    raise ConversionError("this is an R2Gen checkpoint (it has the relational memory "
                          f"{R2GEN_MARK}*), not an R2GenCMN one; convert it with "
                          "python -m cnx2rg_jax.convert.r2gen")
  if MEMORY not in sd:
    raise ConversionError(f"the checkpoint has no {MEMORY}: not an R2GenCMN model")


def infer_dims(sd: Mapping[str, np.ndarray], num_heads: int = 8, topk: int = 32) -> dict:
  """The `config.model` values the checkpoint's shapes give (heads and top-k from the arguments,
  which no tensor shows)."""
  check_architecture(sd)
  d_model, d_vf = need(sd, ED + "att_embed.0.weight", 2).shape
  d_ff = need(sd, ED + "model.encoder.layers.0.feed_forward.w_1.weight", 2).shape[0]
  cmm_size, cmm_dim = need(sd, MEMORY, 2).shape
  if cmm_dim != d_model:
    raise ConversionError(f"{MEMORY} is {cmm_dim} wide, the model {d_model}: R2GenCMN needs "
                          "cmm_dim == d_model")
  if num_heads < 1 or d_model % num_heads:
    raise ConversionError(f"--num_heads={num_heads} does not divide the width {d_model}")
  if not 1 <= topk <= cmm_size:
    raise ConversionError(f"--topk={topk} must be in [1, cmm_size={cmm_size}]")
  return {**r2w.visual_dims(sd), "d_model": int(d_model), "d_ff": int(d_ff),
          "num_heads": int(num_heads), "num_encoder_layers": r2w.count_layers(sd, "encoder"),
          "num_decoder_layers": r2w.count_layers(sd, "decoder"),
          "architecture": "cmn", "cmm_size": int(cmm_size), "cmm_dim": int(cmm_dim),
          "cmn_topk": int(topk), "_d_vf": int(d_vf)}


def _target(name: str) -> Optional[tuple]:
  """(our params path under 'transformer', 'linear' | 'plain') of an encoder_decoder tensor."""
  rest = name[len(ED):]
  m = re.fullmatch(r"(att_embed\.0|logit)\.(weight|bias)", rest)
  if m:
    return ("att_embed" if m.group(1) != "logit" else "logit", _LINEAR[m.group(2)]), "linear"
  if rest == "memory_matrix":
    return ("cmn", "memory"), "plain"
  m = re.fullmatch(r"(?:model\.)?cmn\.linears\.([0-3])\.(weight|bias)", rest)
  if m:
    return ("cmn", _ATTN[m.group(1)], _LINEAR[m.group(2)]), "linear"
  if rest == "model.tgt_embed.0.lut.weight":
    return ("embed", "lut", "embedding"), "plain"
  m = re.fullmatch(r"model\.(encoder|decoder)\.norm\.(a_2|b_2)", rest)
  if m:
    return (f"{m.group(1)}_norm", _NORM[m.group(2)]), "plain"
  m = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", rest)
  if not m:
    return None
  part, i, sub = m.groups()
  return r2w.layer_target(part, f"{part}_layers_{i}", sub, _NORM)


# The variables of model_config's architecture (CMNModel for architecture 'cmn'), traced once
expected_variables = r2w.expected_variables


def convert_state_dict(sd: Mapping[str, np.ndarray], model_config, rows: np.ndarray) -> dict:
  """R2GenCMN's state_dict -> {'params', 'batch_stats'} of CMNModel(model_config) (numpy
  float32); `rows[our id]` is R2GenCMN's row of each of our ids (convert.r2gen.build_tokenizer:
  its tokenizer is R2Gen's). Raises ConversionError naming what does not fit."""
  check_architecture(sd)
  if model_config.architecture != "cmn":
    raise ConversionError("an R2GenCMN checkpoint needs model.architecture='cmn'")
  if not (model_config.r2gen_rgb_stem and model_config.r2gen_layernorm):
    raise ConversionError("an R2GenCMN checkpoint needs model.r2gen_rgb_stem and "
                          "model.r2gen_layernorm (configs/r2gen_cmn.py sets them)")
  want = expected_variables(model_config)
  rows = np.asarray(rows)
  if len(rows) != model_config.vocab_size:
    raise ConversionError(f"the row map has {len(rows)} ids, the model {model_config.vocab_size}")
  positions = re.compile(re.escape(ED) + r"model\.(src_embed\.0|tgt_embed\.1)\.pe")
  out, visual, copies = r2w.place_tensors(sd, model_config, rows, want, _target,
                                          lambda name: bool(positions.fullmatch(name)),
                                          f"{int(rows.max()) + 1} R2GenCMN rows")
  if copies:
    raise ConversionError("the two copies of the memory maps (encoder_decoder.cmn.* and "
                          f"encoder_decoder.model.cmn.*) differ: {sorted(copies.values())}")
  return r2w.fill_visual(out, want, visual, model_config)
