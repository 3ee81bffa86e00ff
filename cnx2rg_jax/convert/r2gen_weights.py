"""R2Gen's checkpoint (cuhksz-nlp/R2Gen's model_best.pth) -> our Flax variables.

What R2Gen's trainer saves: {'epoch', 'state_dict', 'optimizer', 'monitor_best'}; only
`state_dict` is used (the optimizer state is dropped: our optimizer state starts fresh). Its
tensors (a 'module.' prefix from DataParallel is stripped), and where they go:
  visual_extractor.model.{0,1,4,5,6,7}.*  torchvision's conv1, bn1, layer1..layer4 (the ResNet
        without avgpool and fc, as an nn.Sequential) -> params/batch_stats visual/resnet/...,
        by `convert_torchvision.convert_resnet_state_dict` with its 3-channel stem kept
        (model.r2gen_rgb_stem)
  encoder_decoder.att_embed.0               Linear(d_vf -> d)   -> transformer/att_embed
  encoder_decoder.logit                     Linear(d -> V + 1)  -> transformer/logit (rows mapped)
  encoder_decoder.model.tgt_embed.0.lut     Embedding(V + 1, d) -> transformer/embed/lut (rows mapped)
  encoder_decoder.model.tgt_embed.1.pe      the sinusoid buffer: checked against ours, not stored
  encoder_decoder.model.encoder.layers.I.self_attn.linears.{0,1,2,3}
                                            -> encoder_layers_I/self_attn/{query,key,value,out}
  ....encoder.layers.I.feed_forward.w_{1,2} -> encoder_layers_I/ffn/{wi,wo}
  ....encoder.layers.I.sublayer.{0,1}.norm.{gamma,beta} -> encoder_layers_I/norm_{attn,ff}/{scale,bias}
  ....encoder.norm / decoder.norm           -> encoder_norm / decoder_norm
  ....decoder.layers.I.{self_attn,src_attn}.linears.J, feed_forward.w_K (as in the encoder)
  ....decoder.layers.I.sublayer.{0,1,2}.norm.{gamma,beta}
                                            -> decoder_layers_I/norm_{self,src,ff}/{scale,bias}
  ....sublayer.S.norm.mlp_{gamma,beta}.{0,2} -> .../mlp_{gamma,beta}/{fc1,fc2}
  ....model.rm.attn.linears.J, rm.mlp.{0,2}, rm.W, rm.U -> transformer/rm/cell/{attn/*,mlp1,mlp2,w,u}
Linear weights [out, in] become kernels [in, out]. `num_batches_tracked` is ignored. Any other
tensor, any of our parameters left unfilled (except the keyword head, which R2Gen does not have
and which is written as zeros) and any shape mismatch is an error naming the tensor.
R2GenCMN's checkpoints (r2gen_cmn_weights) go through the same placement (`place_tensors`,
`fill_visual`), layer map (`layer_target`) and visual depth (`visual_dims`).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Callable, Mapping, Optional

import numpy as np

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.models import convert_torchvision as conv_tv
from cnx2rg_jax.text import tokenizer as tok

SUPPRESSED_LOGIT = -1e9  # bias of the logit rows R2Gen has no counterpart for (pad, bos)

_VISUAL_PREFIX = "visual_extractor.model."
_ED = "encoder_decoder."
# Positions in R2Gen's nn.Sequential(*list(resnet.children())[:-2]) -> torchvision names.
_VISUAL_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                    "7": "layer4"}
_ATTN = {"0": "query", "1": "key", "2": "value", "3": "out"}
_FF = {"w_1": "wi", "w_2": "wo"}
_NORM = {"gamma": "scale", "beta": "bias"}
_LINEAR = {"weight": "kernel", "bias": "bias"}
_ENC_NORMS = {"0": "norm_attn", "1": "norm_ff"}
_DEC_NORMS = {"0": "norm_self", "1": "norm_src", "2": "norm_ff"}
_MLP = {"0": "fc1", "2": "fc2"}
_RM_MLP = {"0": "mlp1", "2": "mlp2"}


class ConversionError(UserError):
  """An R2Gen checkpoint, annotation or option that cannot be converted; the message names it."""


# ----------------------------------------------------------------------------- checkpoint


def read_checkpoint(path: str | os.PathLike, allow_pickle: bool = False
                    ) -> tuple[dict[str, np.ndarray], dict]:
  """({name: float32 array} of R2Gen's state_dict, {'epoch', 'monitor_best'}) from a .pth.

  torch.load runs with weights_only=True (no code from the file is run) unless `allow_pickle`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist (nothing is downloaded)")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading the R2Gen checkpoint {path} needs torch (pip install torch; "
                      "the rest of cnx2rg-jax runs without it)") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except Exception as e:  # pickle errors of several types
    hint = ("" if allow_pickle else "; if you trust the file, --allow_pickle loads it with "
            "torch.load(weights_only=False)")
    raise ConversionError(f"cannot read checkpoint {path} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}){hint}") from e
  if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
    keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ConversionError(f"checkpoint {path} is not an R2Gen trainer checkpoint (a dict with "
                          f"'state_dict', 'optimizer', 'epoch', 'monitor_best'); found {keys}")
  tensors = {}
  for name, value in obj["state_dict"].items():
    if not isinstance(value, torch.Tensor):
      raise ConversionError(f"checkpoint {path}: state_dict entry {name} is a "
                            f"{type(value).__name__}, not a tensor")
    if name.startswith("module."):
      name = name[len("module."):]
    tensors[name] = value.detach().cpu().float().numpy().copy()
  meta = {k: _plain(obj.get(k)) for k in ("epoch", "monitor_best")}
  return tensors, meta


def _plain(v):
  try:
    return float(v) if not isinstance(v, int) else v
  except (TypeError, ValueError):
    return None if v is None else str(v)


def _need(sd: Mapping[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
  if name not in sd:
    raise ConversionError(f"the checkpoint has no tensor {name}: not an R2Gen model")
  if sd[name].ndim != ndim:
    raise ConversionError(f"{name}: expected a {ndim}-d tensor, got shape {sd[name].shape}")
  return sd[name]


def embedding_rows(sd: Mapping[str, np.ndarray]) -> int:
  """Rows of the checkpoint's token embedding: R2Gen's vocabulary size + 1 (row 0)."""
  return _need(sd, _ED + "model.tgt_embed.0.lut.weight", 2).shape[0]


def infer_dims(sd: Mapping[str, np.ndarray], num_heads: int = 8, rm_num_heads: int = 8) -> dict:
  """The `config.model` values the checkpoint's shapes give (heads from the arguments)."""
  att = _need(sd, _ED + "att_embed.0.weight", 2)
  d_model, d_vf = att.shape
  d_ff = _need(sd, _ED + "model.encoder.layers.0.feed_forward.w_1.weight", 2).shape[0]
  rm_d = _need(sd, _ED + "model.rm.W.weight", 2).shape[1]
  mlp_in = _need(sd, _ED + "model.decoder.layers.0.sublayer.0.norm.mlp_gamma.0.weight", 2).shape[1]
  if mlp_in % rm_d:
    raise ConversionError(f"MCLN input width {mlp_in} is not a multiple of rm_d_model {rm_d}")
  visual = visual_dims(sd)
  for name, heads, width in (("--num_heads", num_heads, d_model),
                             ("--rm_num_heads", rm_num_heads, rm_d)):
    if heads < 1 or width % heads:
      raise ConversionError(f"{name}={heads} does not divide the width {width}")
  return {**visual, "d_model": int(d_model), "d_ff": int(d_ff),
          "num_heads": int(num_heads), "num_encoder_layers": count_layers(sd, "encoder"),
          "num_decoder_layers": count_layers(sd, "decoder"), "rm_num_slots": int(mlp_in // rm_d),
          "rm_num_heads": int(rm_num_heads), "rm_d_model": int(rm_d), "_d_vf": int(d_vf)}


def count_layers(sd: Mapping[str, np.ndarray], part: str) -> int:
  """How many layers the checkpoint's 'encoder' or 'decoder' has."""
  return len({m.group(1) for n in sd for m in [re.match(
      rf"{re.escape(_ED)}model\.{part}\.layers\.(\d+)\.", n)] if m})


def visual_dims(sd: Mapping[str, np.ndarray]) -> dict:
  """The torchvision ResNet depth of the visual extractor's tensors (blocks per stage)."""
  blocks = [len({m.group(1) for n in sd for m in [re.match(
      rf"{re.escape(_VISUAL_PREFIX)}{k}\.(\d+)\.", n)] if m}) for k in ("4", "5", "6", "7")]
  bottleneck = any(n.startswith(_VISUAL_PREFIX + "4.0.conv3.") for n in sd)
  depth = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
           (True, (3, 4, 23, 3)): 101}.get((bottleneck, tuple(blocks)))
  if depth is None:
    raise ConversionError(f"the visual extractor (blocks per stage {blocks}, "
                          f"{'bottleneck' if bottleneck else 'basic'}) is not a torchvision "
                          "ResNet-18/34/50/101")
  return {"resnet_depth": depth, "resnet_width": 64}


def _transformer_target(name: str) -> Optional[tuple]:
  """Our params path (under 'transformer') and 'linear'|'plain' for an encoder_decoder tensor."""
  rest = name[len(_ED):]
  m = re.fullmatch(r"att_embed\.0\.(weight|bias)", rest)
  if m:
    return ("att_embed", _LINEAR[m.group(1)]), "linear"
  m = re.fullmatch(r"logit\.(weight|bias)", rest)
  if m:
    return ("logit", _LINEAR[m.group(1)]), "linear"
  if rest == "model.tgt_embed.0.lut.weight":
    return ("embed", "lut", "embedding"), "plain"
  m = re.fullmatch(r"model\.(encoder|decoder)\.norm\.(gamma|beta)", rest)
  if m:
    return (f"{m.group(1)}_norm", _NORM[m.group(2)]), "plain"
  m = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", rest)
  if m:
    part, i, sub = m.groups()
    layer, norms = f"{part}_layers_{i}", _ENC_NORMS if part == "encoder" else _DEC_NORMS
    target = layer_target(part, layer, sub, _NORM)
    if target is not None:
      return target
    m2 = re.fullmatch(r"sublayer\.(\d)\.norm\.(mlp_gamma|mlp_beta)\.([02])\.(weight|bias)", sub)
    if m2 and part == "decoder" and m2.group(1) in norms:
      return ((layer, norms[m2.group(1)], m2.group(2), _MLP[m2.group(3)],
               _LINEAR[m2.group(4)]), "linear")
    return None
  m = re.fullmatch(r"model\.rm\.attn\.linears\.([0-3])\.(weight|bias)", rest)
  if m:
    return ("rm", "cell", "attn", _ATTN[m.group(1)], _LINEAR[m.group(2)]), "linear"
  m = re.fullmatch(r"model\.rm\.mlp\.([02])\.(weight|bias)", rest)
  if m:
    return ("rm", "cell", _RM_MLP[m.group(1)], _LINEAR[m.group(2)]), "linear"
  m = re.fullmatch(r"model\.rm\.(W|U)\.(weight|bias)", rest)
  if m:
    return ("rm", "cell", m.group(1).lower(), _LINEAR[m.group(2)]), "linear"
  return None


def layer_target(part: str, layer: str, sub: str, norm_fields: Mapping[str, str]
                 ) -> Optional[tuple]:
  """(our path, 'linear' | 'plain') of a tensor `sub` of an encoder or decoder layer: its
  attention maps, feed-forward and norms (`norm_fields`: the peer's names of scale and bias)."""
  m = re.fullmatch(r"(self_attn|src_attn)\.linears\.([0-3])\.(weight|bias)", sub)
  if m and (part == "decoder" or m.group(1) == "self_attn"):
    return (layer, m.group(1), _ATTN[m.group(2)], _LINEAR[m.group(3)]), "linear"
  m = re.fullmatch(r"feed_forward\.(w_1|w_2)\.(weight|bias)", sub)
  if m:
    return (layer, "ffn", _FF[m.group(1)], _LINEAR[m.group(2)]), "linear"
  norms = _ENC_NORMS if part == "encoder" else _DEC_NORMS
  m = re.fullmatch(r"sublayer\.(\d)\.norm\.(" + "|".join(norm_fields) + ")", sub)
  if m and m.group(1) in norms:
    return (layer, norms[m.group(1)], norm_fields[m.group(2)]), "plain"
  return None


def _sinusoid_ok(pe: np.ndarray, d_model: int) -> bool:
  from cnx2rg_jax.models.layers import sinusoidal_positions  # pylint: disable=import-outside-toplevel
  pe = pe.reshape(-1, pe.shape[-1])
  if pe.shape[-1] != d_model:
    return False
  n = min(len(pe), 512)
  return bool(np.allclose(pe[:n], np.asarray(sinusoidal_positions(n, d_model)), atol=1e-4))


@functools.lru_cache(maxsize=8)
def expected_variables(model_config) -> dict:
  """{collection: {path tuple: shape}} of the variables of model_config's architecture (CNX2RG
  or CMNModel; traced only; do not modify the result, it is cached)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  model = factory.model_of(model_config, image_normalization="imagenet")
  variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                      jnp.zeros(model_config.image_shape(1, 64), jnp.float32),
                                      jnp.zeros((1, 2), jnp.int32)))
  return {col: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}
          for col, tree in variables.items()}


def convert_state_dict(sd: Mapping[str, np.ndarray], model_config, rows: np.ndarray) -> dict:
  """R2Gen's state_dict -> {'params', 'batch_stats'} of CNX2RG(model_config) (numpy float32).

  `rows[our id]` is the R2Gen row of each of our vocabulary ids (see `build_tokenizer`).
  Raises ConversionError naming every tensor it cannot place, every parameter left unfilled
  and any shape mismatch.
  """
  if not (model_config.r2gen_rgb_stem and model_config.r2gen_layernorm):
    raise ConversionError("an R2Gen checkpoint needs model.r2gen_rgb_stem and "
                          "model.r2gen_layernorm (configs/r2gen.py sets them)")
  want = expected_variables(model_config)
  rows = np.asarray(rows)
  lut_rows = sd.get(_ED + "model.tgt_embed.0.lut.weight", np.zeros((0, 0))).shape[0]
  if len(rows) != model_config.vocab_size:
    raise ConversionError(f"the row map has {len(rows)} ids, the model {model_config.vocab_size}")
  if lut_rows and rows.max() >= lut_rows:
    raise ConversionError(f"the vocabulary maps to R2Gen row {int(rows.max())}, but the "
                          f"checkpoint's embedding has {lut_rows} rows")
  out, visual, _ = place_tensors(sd, model_config, rows, want, _transformer_target,
                                 lambda name: name == _ED + "model.tgt_embed.1.pe",
                                 f"{len(np.unique(rows))} R2Gen rows")
  return fill_visual(out, want, visual, model_config)


def place_tensors(sd: Mapping[str, np.ndarray], model_config, rows: np.ndarray, want: dict,
                  target: Callable[[str], Optional[tuple]], is_positions: Callable[[str], bool],
                  rows_text: str) -> tuple[dict, dict, dict]:
  """Places the checkpoint's tensors: returns ({collection: {path: array}} of the transformer,
  {torchvision name: array} of the visual extractor, {path: name} of a tensor that landed on a
  path another tensor filled with other values). `target(name)` is the peer's tensor map,
  `is_positions(name)` its sinusoid buffers (checked, not stored); `rows_text` counts the peer's
  rows for the error. Raises ConversionError naming every tensor not placed or not fitting."""
  out: dict[str, dict] = {col: {} for col in want}
  visual, unplaced, mismatched, copies = {}, [], [], {}
  for name, value in sd.items():
    if name.endswith("num_batches_tracked"):
      continue
    if name.startswith(_VISUAL_PREFIX):
      head, _, tail = name[len(_VISUAL_PREFIX):].partition(".")
      if head in _VISUAL_CHILDREN and tail:
        visual[f"{_VISUAL_CHILDREN[head]}.{tail}"] = value
      else:
        unplaced.append(name)
      continue
    if is_positions(name):
      if not _sinusoid_ok(value, model_config.d_model):
        raise ConversionError(f"{name}: the positional table is not the sinusoid table of "
                              f"width {model_config.d_model}")
      continue
    placed = target(name) if name.startswith(_ED) else None
    path = None if placed is None else ("transformer",) + placed[0]
    if path is None or path not in want["params"]:
      unplaced.append(name)
      continue
    array = np.asarray(value, np.float32)
    if placed[1] == "linear" and path[-1] == "kernel":
      if array.ndim != 2:
        mismatched.append(f"{name}: shape {array.shape} is not a Linear weight")
        continue
      array = array.T
    if path[1] in ("logit", "embed"):
      array = _map_rows(name, array, rows, path)
      if array is None:
        mismatched.append(f"{name}: shape {tuple(value.shape)} does not fit {rows_text}")
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
  return out, visual, copies


def fill_visual(out: dict, want: dict, visual: Mapping[str, np.ndarray], model_config) -> dict:
  """`out` with the visual extractor's tensors placed and the keyword head (neither peer has
  one) zero, as {'params', 'batch_stats'} trees; raises ConversionError naming a parameter left
  unfilled or a visual tensor that does not fit."""
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  try:
    resnet = conv_tv.convert_resnet_state_dict(visual, model_config.resnet_depth, in_channels=3)
  except ValueError as e:  # names torchvision's tensor names; say where they came from
    raise ConversionError(f"visual extractor ({_VISUAL_PREFIX}*, positions 0/1/4-7 = "
                          f"conv1/bn1/layer1-4): {e}") from e
  for col, tree in resnet.items():
    for k, v in traverse_util.flatten_dict(tree).items():
      path = ("visual", "resnet") + k
      if want[col].get(path) != v.shape:
        raise ConversionError(f"visual {col}/{'/'.join(k)}: shape {v.shape} does not fit "
                              f"{want[col].get(path)}")
      out[col][path] = v
  for path, shape in want["params"].items():
    if path[0] == "keyword_head":
      out["params"][path] = np.zeros(shape, np.float32)
  missing = [f"{col}/{'/'.join(p)}" for col, paths in want.items() for p in paths
             if p not in out[col]]
  if missing:
    raise ConversionError(f"parameter(s) left unfilled by the checkpoint: {sorted(missing)}")
  return {col: traverse_util.unflatten_dict(flat) for col, flat in out.items()}


def _map_rows(name: str, array: np.ndarray, rows: np.ndarray, path: tuple):
  """Embedding [R2Gen rows, d] -> [ours, d]; logit kernel [d, R2Gen rows] -> [d, ours], bias
  likewise, with pad and bos suppressed in the logit layer."""
  if path[1] == "embed":
    if array.ndim != 2 or rows.max() >= array.shape[0]:
      return None
    return array[rows]
  axis = array.ndim - 1
  if rows.max() >= array.shape[axis]:
    return None
  mapped = np.take(array, rows, axis=axis)
  fill = SUPPRESSED_LOGIT if path[-1] == "bias" else 0.0
  mapped[..., [tok.PAD_ID, tok.BOS_ID]] = fill
  return mapped
