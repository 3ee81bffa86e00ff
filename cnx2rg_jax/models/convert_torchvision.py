"""torchvision ResNet weights (local files only) -> variables of the Flax `resnet.ResNet`.

`load_torch_weights(path)` reads a `.safetensors` file (parsed here, no `safetensors` package
needed) or a `.pth`/`.pt` file (needs torch, imported only then). Nothing is ever downloaded.

`convert_resnet_state_dict(state_dict, depth, in_channels)` renames and transposes the tensors:
conv weights OIHW -> HWIO; BN weight/bias -> params scale/bias, running_mean/var -> batch_stats
mean/var. With in_channels == 1 a 3-channel stem is summed over RGB, which gives exactly the
3-channel conv's output on a gray image replicated to RGB. `fc.*` (the ImageNet classifier) and
`num_batches_tracked` are ignored: the encoder stops at layer4 and Flax keeps no step counter.
Anything else that cannot be placed, any Flax variable left unfilled and any shape mismatch is
an error that names the tensor.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util
import flax.linen as nn

from cnx2rg_jax.models import resnet as resnet_lib

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_BLOCK_RE = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.0|downsample\.1)\.(\w+)$")
_STEM_RE = re.compile(r"^(conv1|bn1)\.(\w+)$")


def _target(name: str):
  """(collection, flax path tuple, is_conv) for a torchvision ResNet tensor name, or None."""
  m = _STEM_RE.match(name)
  if m:
    prefix, module, field = (), m.group(1), m.group(2)
  else:
    m = _BLOCK_RE.match(name)
    if not m:
      return None
    prefix = (f"layer{m.group(1)}_{m.group(2)}",)
    module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(
        m.group(3), m.group(3))
    field = m.group(4)
  if module.startswith(("conv", "downsample_conv")):
    return ("params", prefix + (module, "kernel"), True) if field == "weight" else None
  if field not in _BN_FIELDS:
    return None
  collection, leaf = _BN_FIELDS[field]
  return collection, prefix + (module, leaf), False


def expected_shapes(depth: int, in_channels: int = 1) -> dict:
  """{collection: {flax path tuple: shape}} of the Flax ResNet's variables (traced, not built)."""
  return {col: dict(shapes) for col, shapes in _expected_shapes(depth, in_channels).items()}


@functools.lru_cache(maxsize=None)
def _expected_shapes(depth: int, in_channels: int) -> dict:
  model = resnet_lib.ResNet(depth=depth, in_channels=in_channels)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 64, 64, in_channels), jnp.float32))
  shapes = nn.unbox(shapes)
  return {col: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}
          for col, tree in shapes.items()}


def convert_resnet_state_dict(state_dict: Mapping[str, np.ndarray], depth: int,
                              in_channels: int = 1) -> dict:
  """torchvision ResNet-`depth` state dict -> {'params': ..., 'batch_stats': ...} (float32).

  The trees are the variables of `resnet.ResNet(depth, in_channels)`, i.e. the `resnet`
  submodule of `VisualEncoder`. Raises ValueError naming every tensor that cannot be placed,
  every Flax variable left unfilled, and any shape mismatch (with both shapes).
  """
  want = expected_shapes(depth, in_channels)
  out = {col: {} for col in want}
  unplaced = []
  for name, value in state_dict.items():
    if name.endswith("num_batches_tracked") or name.startswith("fc."):
      continue
    target = _target(name)
    if target is None or target[1] not in want.get(target[0], {}):
      unplaced.append(name)
      continue
    collection, path, is_conv = target
    array = np.asarray(value, dtype=np.float32)
    if is_conv:
      if array.ndim != 4:
        raise ValueError(f"{name}: expected a 4-d OIHW conv weight, got shape {array.shape}")
      if name == "conv1.weight" and in_channels == 1 and array.shape[1] == 3:
        # Gray image g replicated to RGB: sum_c W_c * g == (sum_c W_c) * g, so summing is exact.
        array = array.sum(axis=1, keepdims=True)
      array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    shape = want[collection][path]
    if array.shape != shape:
      raise ValueError(f"{name}: shape {tuple(np.shape(value))} (as {array.shape} after "
                       f"conversion) does not fit Flax {collection}/{'/'.join(path)} {shape}")
    out[collection][path] = array
  if unplaced:
    raise ValueError(f"ResNet-{depth} conversion: cannot place tensor(s) {sorted(unplaced)}")
  missing = [f"{col}/{'/'.join(p)}" for col, paths in want.items() for p in paths
             if p not in out[col]]
  if missing:
    raise ValueError(f"ResNet-{depth} conversion: Flax variable(s) left unfilled {sorted(missing)}")
  return {col: traverse_util.unflatten_dict(flat) for col, flat in out.items()}


# safetensors dtype tag -> little-endian numpy dtype of the stored bytes.
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16,
              "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _read_safetensors(path: str) -> dict:
  """Parse a .safetensors file: u64 LE header size, JSON header, then one raw byte buffer."""
  with open(path, "rb") as f:
    raw = f.read()
  if len(raw) < 8:
    raise ValueError(f"{path}: too short to be a safetensors file")
  (header_len,) = struct.unpack("<Q", raw[:8])
  if 8 + header_len > len(raw):
    raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
  header = json.loads(raw[8:8 + header_len].decode("utf-8"))
  data = memoryview(raw)[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _ST_DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if not 0 <= begin <= end <= len(data) or end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise ValueError(f"{path}: tensor {name} data_offsets {info['data_offsets']} do not fit "
                       f"shape {shape} of {info['dtype']}")
    array = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    if info["dtype"] in ("F16", "BF16"):
      array = array.astype(np.float32)  # half precision upcast: the converter wants float32
    tensors[name] = np.array(array)  # own copy, native byte order, writeable
  return tensors


def _read_torch(path: str) -> dict:
  """Read a torch-saved state dict (plain, or under 'state_dict'/'model'), 'module.' stripped."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"{path}: reading .pth/.pt files needs torch; convert the file to "
                      ".safetensors or install torch") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(obj, Mapping):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), Mapping):
        obj = obj[key]
        break
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
  tensors = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f"{path}: entry {name} is a {type(value).__name__}, not a tensor")
    if name.startswith("module."):  # saved from DataParallel / DistributedDataParallel
      name = name[len("module."):]
    value = value.detach().cpu()
    if value.dtype in (torch.bfloat16, torch.float16):
      value = value.float()
    tensors[name] = value.numpy().copy()
  return tensors


def load_torch_weights(path: str) -> dict[str, np.ndarray]:
  """Tensors of a local .safetensors or .pth/.pt file as {name: numpy array}.

  F16/BF16 tensors come back float32; other dtypes as stored. Raises FileNotFoundError for a
  missing file and ValueError for any other extension.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file {path} does not exist (nothing is downloaded)")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    return _read_safetensors(path)
  if ext in (".pth", ".pt"):
    return _read_torch(path)
  raise ValueError(f"{path}: unknown weights format {ext!r}; expected .safetensors, .pth or .pt")
