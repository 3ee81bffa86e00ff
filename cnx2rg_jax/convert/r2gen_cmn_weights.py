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

import functools
import re
from typing import Mapping, Optional

import numpy as np

from cnx2rg_jax.convert import r2gen_weights as r2w
from cnx2rg_jax.convert.r2gen_weights import ConversionError
from cnx2rg_jax.models import convert_torchvision as conv_tv

ED = "encoder_decoder."
MEMORY = ED + "memory_matrix"
LUT = ED + "model.tgt_embed.0.lut.weight"
_NORM = {"a_2": "scale", "b_2": "bias"}
_ATTN = {"0": "query", "1": "key", "2": "value", "3": "out"}
_LINEAR = {"weight": "kernel", "bias": "bias"}
_ENC_NORMS = {"0": "norm_attn", "1": "norm_ff"}
_DEC_NORMS = {"0": "norm_self", "1": "norm_src", "2": "norm_ff"}
_FF = {"w_1": "wi", "w_2": "wo"}
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
  layers = lambda part: len({m.group(1) for n in sd for m in [re.match(  # noqa: E731
      rf"{re.escape(ED)}model\.{part}\.layers\.(\d+)\.", n)] if m})
  if num_heads < 1 or d_model % num_heads:
    raise ConversionError(f"--num_heads={num_heads} does not divide the width {d_model}")
  if not 1 <= topk <= cmm_size:
    raise ConversionError(f"--topk={topk} must be in [1, cmm_size={cmm_size}]")
  return {**_visual_dims(sd), "d_model": int(d_model), "d_ff": int(d_ff),
          "num_heads": int(num_heads),
          "num_encoder_layers": layers("encoder"), "num_decoder_layers": layers("decoder"),
          "architecture": "cmn", "cmm_size": int(cmm_size), "cmm_dim": int(cmm_dim),
          "cmn_topk": int(topk), "_d_vf": int(d_vf)}


def _visual_dims(sd: Mapping[str, np.ndarray]) -> dict:
  """The torchvision ResNet depth of the visual extractor's tensors (blocks per stage)."""
  prefix = "visual_extractor.model."
  blocks = tuple(len({m.group(1) for n in sd for m in [re.match(rf"{re.escape(prefix)}{k}\.(\d+)\.",
                                                                  n)] if m})
                 for k in ("4", "5", "6", "7"))
  bottleneck = any(n.startswith(prefix + "4.0.conv3.") for n in sd)
  depth = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
           (True, (3, 4, 23, 3)): 101}.get((bottleneck, blocks))
  if depth is None:
    raise ConversionError(f"the visual extractor (blocks per stage {list(blocks)}, "
                          f"{'bottleneck' if bottleneck else 'basic'}) is not a torchvision "
                          "ResNet-18/34/50/101")
  return {"resnet_depth": depth, "resnet_width": 64}


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
  layer = f"{part}_layers_{i}"
  m2 = re.fullmatch(r"(self_attn|src_attn)\.linears\.([0-3])\.(weight|bias)", sub)
  if m2 and (part == "decoder" or m2.group(1) == "self_attn"):
    return (layer, m2.group(1), _ATTN[m2.group(2)], _LINEAR[m2.group(3)]), "linear"
  m2 = re.fullmatch(r"feed_forward\.(w_1|w_2)\.(weight|bias)", sub)
  if m2:
    return (layer, "ffn", _FF[m2.group(1)], _LINEAR[m2.group(2)]), "linear"
  norms = _ENC_NORMS if part == "encoder" else _DEC_NORMS
  m2 = re.fullmatch(r"sublayer\.(\d)\.norm\.(a_2|b_2)", sub)
  if m2 and m2.group(1) in norms:
    return (layer, norms[m2.group(1)], _NORM[m2.group(2)]), "plain"
  return None


@functools.lru_cache(maxsize=8)
def expected_variables(model_config) -> dict:
  """{collection: {path tuple: shape}} of CMNModel(model_config)'s variables (traced only)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  model = factory.model_of(model_config, image_normalization="imagenet")
  variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                      jnp.zeros(model_config.image_shape(1, 64), jnp.float32),
                                      jnp.zeros((1, 2), jnp.int32)))
  return {col: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}
          for col, tree in variables.items()}


def convert_state_dict(sd: Mapping[str, np.ndarray], model_config, rows: np.ndarray) -> dict:
  """R2GenCMN's state_dict -> {'params', 'batch_stats'} of CMNModel(model_config) (numpy
  float32); `rows[our id]` is R2GenCMN's row of each of our ids (convert.r2gen.build_tokenizer:
  its tokenizer is R2Gen's). Raises ConversionError naming what does not fit."""
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  check_architecture(sd)
  if model_config.architecture != "cmn":
    raise ConversionError("an R2GenCMN checkpoint needs model.architecture='cmn'")
  if not (model_config.r2gen_rgb_stem and model_config.r2gen_layernorm):
    raise ConversionError("an R2GenCMN checkpoint needs model.r2gen_rgb_stem and "
                          "model.r2gen_layernorm (configs/r2gen_cmn.py sets them)")
  want = expected_variables(model_config)
  out: dict[str, dict] = {col: {} for col in want}
  visual, unplaced, mismatched, copies = {}, [], [], {}
  rows = np.asarray(rows)
  if len(rows) != model_config.vocab_size:
    raise ConversionError(f"the row map has {len(rows)} ids, the model {model_config.vocab_size}")
  for name, value in sd.items():
    if name.endswith("num_batches_tracked"):
      continue
    if name.startswith("visual_extractor.model."):
      head, _, tail = name[len("visual_extractor.model."):].partition(".")
      if head in r2w._VISUAL_CHILDREN and tail:  # pylint: disable=protected-access
        visual[f"{r2w._VISUAL_CHILDREN[head]}.{tail}"] = value  # pylint: disable=protected-access
      else:
        unplaced.append(name)
      continue
    if re.fullmatch(re.escape(ED) + r"model\.(src_embed\.0|tgt_embed\.1)\.pe", name):
      if not r2w._sinusoid_ok(value, model_config.d_model):  # pylint: disable=protected-access
        raise ConversionError(f"{name}: the positional table is not the sinusoid table of "
                              f"width {model_config.d_model}")
      continue
    target = _target(name) if name.startswith(ED) else None
    path = None if target is None else ("transformer",) + target[0]
    if path is None or path not in want["params"]:
      unplaced.append(name)
      continue
    array = np.asarray(value, np.float32)
    if target[1] == "linear" and path[-1] == "kernel":
      if array.ndim != 2:
        mismatched.append(f"{name}: shape {array.shape} is not a Linear weight")
        continue
      array = array.T
    if path[1] in ("logit", "embed"):
      array = r2w._map_rows(name, array, rows, path)  # pylint: disable=protected-access
      if array is None:
        mismatched.append(f"{name}: shape {tuple(value.shape)} does not fit "
                          f"{int(rows.max()) + 1} R2GenCMN rows")
        continue
    if array.shape != want["params"][path]:
      mismatched.append(f"{name}: shape {tuple(value.shape)} (as {array.shape}) does not fit "
                        f"params/{'/'.join(path)} {want['params'][path]}")
      continue
    if path in out["params"] and not np.array_equal(out["params"][path], array):
      copies[path] = name
    out["params"][path] = array
  if unplaced:
    raise ConversionError(f"cannot place tensor(s) {sorted(unplaced)}")
  if mismatched:
    raise ConversionError("shape mismatch: " + "; ".join(mismatched))
  if copies:
    raise ConversionError("the two copies of the memory maps (encoder_decoder.cmn.* and "
                          f"encoder_decoder.model.cmn.*) differ: {sorted(copies.values())}")
  try:
    resnet = conv_tv.convert_resnet_state_dict(visual, model_config.resnet_depth, in_channels=3)
  except ValueError as e:
    raise ConversionError(f"visual extractor (visual_extractor.model.*, positions 0/1/4-7 = "
                          f"conv1/bn1/layer1-4): {e}") from e
  for col, tree in resnet.items():
    for k, v in traverse_util.flatten_dict(tree).items():
      path = ("visual", "resnet") + k
      if want[col].get(path) != v.shape:
        raise ConversionError(f"visual {col}/{'/'.join(k)}: shape {v.shape} does not fit "
                              f"{want[col].get(path)}")
      out[col][path] = v
  for path, shape in want["params"].items():  # R2GenCMN has no keyword head: zeros
    if path[0] == "keyword_head":
      out["params"][path] = np.zeros(shape, np.float32)
  missing = [f"{col}/{'/'.join(p)}" for col, paths in want.items() for p in paths
             if p not in out[col]]
  if missing:
    raise ConversionError(f"parameter(s) left unfilled by the checkpoint: {sorted(missing)}")
  return {col: traverse_util.unflatten_dict(flat) for col, flat in out.items()}
