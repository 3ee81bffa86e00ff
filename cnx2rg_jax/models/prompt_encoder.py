"""The frozen image-text encoder of prompt training: MedCLIP's ResNet-50 vision tower in Flax.

The paper's prompt module adds to the visual tokens the features of a frozen pretrained
image-text encoder. `MedCLIPImageEncoder` is MedCLIP's released ResNet-50 vision tower
(Wang et al. 2022, github.com/RyanWangZf/MedCLIP, `medclip/modeling_medclip.py`,
`MedCLIPVisionModel`): torchvision's ResNet-50 whose `fc` is a bias-free Linear(2048 -> 512)
projection into the space shared with the text tower. Its weights come from a directory that
`python -m cnx2rg_jax.convert.medclip` writes; they never train (see `CNX2RG` and
`training/optimizer.py`).

What it returns, and why (P = 1 token, D = 512): MedCLIP's contrastive loss aligns only the
pooled, projected image embedding with report text; its 7x7 layer4 map carries no text-aligned
meaning, and our own ResNet already gives the decoder spatial tokens. So the encoder gives ONE
token a radiograph: MedCLIP's image embedding, L2-normalised as `MedCLIPModel.encode_image` does
(the direction is what MedCLIP compares with text; its length is arbitrary), times sqrt(512) so
that its components have RMS 1 like the other visual tokens' scale. Output [B, 1, 512] float32;
set `model.prompt_feature_dim = 512`.

Input: our pipeline's gray images [B, H, W, 1], normalised by `data.normalization`. MedCLIP's
preprocessing (`MedCLIPFeatureExtractor`, `medclip/dataset.py` and `constants.py`): pad to a
square with black, resize to 224 (bicubic), centre-crop 224, scale to [0, 1], subtract
IMG_MEAN = 0.5862785803043838 and divide by IMG_STD = 0.27950088968644304, one channel, which
`MedCLIPVisionModel.forward` repeats to 3 (the converter sums the RGB stem instead, which is
exact for a gray image, see `convert_torchvision`). Here, in `to_medclip_pixels`:
  * "imagenet" normalisation is undone exactly and MedCLIP's applied;
  * "zscore" (per image, the paper's) is used as it is: MedCLIP's normalisation is the same
    affine map whenever an image's own mean and std equal MedCLIP's dataset statistics, so this
    is an approximation that keeps each image's contrast normalised;
  * images whose side is not `image_size` (config `model.prompt_encoder_image_size`, MedCLIP's
    224 by default) are resized to it, bicubic as MedCLIP does (antialiased when shrinking);
  * our images are already square (the pipeline resizes without keeping the aspect ratio), so
    MedCLIP's padding has no counterpart.
BatchNorm always uses the converted running statistics (MedCLIP in eval mode).

Converted files (`save_variables` / `load_variables`), read with NumPy only, no torch:
  DIR/prompt_encoder.npz   the Flax variables, one array per flattened path, e.g.
                           "params/resnet/conv1/kernel", "batch_stats/resnet/bn1/mean",
                           "params/projection/kernel" (float32)
  DIR/prompt_encoder.json  {"format", "format_version", "architecture": "medclip_resnet50",
                            "embedding_dim": 512, "image_size": 224, "image_mean", "image_std",
                            "source", "source_bytes", "source_sha256", "num_parameters"}
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import zipfile
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.resnet import ResNet

ARCHITECTURE = "medclip_resnet50"
EMBEDDING_DIM = 512  # MedCLIP's projection width (vision_model.model.fc: 2048 -> 512)
BACKBONE_FEATURES = 2048  # ResNet-50 layer4 channels
MEDCLIP_IMAGE_SIZE = 224  # medclip/constants.py IMG_SIZE
MEDCLIP_MEAN = 0.5862785803043838  # IMG_MEAN, on [0, 1] gray values
MEDCLIP_STD = 0.27950088968644304  # IMG_STD
# The input pipeline's "imagenet" statistics (cnx2rg_jax/data/transforms.py), on [0, 1] values;
# tests/test_medclip.py checks that they agree.
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449, 0.226
INPUT_NORMALIZATIONS = ("zscore", "imagenet", "medclip")

WEIGHTS_FILE = "prompt_encoder.npz"
META_FILE = "prompt_encoder.json"
FORMAT = "cnx2rg_jax.prompt_encoder"
FORMAT_VERSION = 1
CONVERT_COMMAND = "python -m cnx2rg_jax.convert.medclip --checkpoint=pytorch_model.bin --output=DIR"


class PromptEncoderError(UserError):
  """A converted prompt-encoder directory that cannot be used; the message names the path."""


def to_medclip_pixels(images: jax.Array, normalization: str, image_size: int) -> jax.Array:
  """Our normalised gray images [B, H, W, 1] -> MedCLIP's input [B, S, S, 1] float32 (S =
  `image_size`); see the module doc for what is exact and what approximate."""
  if normalization not in INPUT_NORMALIZATIONS:
    raise ValueError(f"input normalization {normalization!r}; choose one of "
                     f"{INPUT_NORMALIZATIONS}")
  x = images.astype(jnp.float32)
  if normalization == "imagenet":
    gray = x * IMAGENET_GRAY_STD + IMAGENET_GRAY_MEAN  # back to [0, 1] values
    x = (gray - MEDCLIP_MEAN) / MEDCLIP_STD
  b, h, w, c = x.shape
  if (h, w) != (image_size, image_size):
    x = jax.image.resize(x, (b, image_size, image_size, c), "bicubic", antialias=True)
  return x


class MedCLIPImageEncoder(nn.Module):
  """MedCLIP's ResNet-50 vision tower: `__call__(images)` -> prompt features [B, 1, 512] float32.

  Submodules `resnet` (our `ResNet(depth=50, in_channels=1)`, BatchNorm frozen) and `projection`
  (Dense 2048 -> 512, no bias); their variables are what `load_variables` returns.
  """
  image_size: int = MEDCLIP_IMAGE_SIZE
  input_normalization: str = "zscore"
  dtype: Any = jnp.float32  # ResNet activations; the pooling and projection run in float32

  def setup(self):
    self.resnet = ResNet(depth=50, in_channels=1, dtype=self.dtype, frozen_bn=True)
    self.projection = nn.Dense(
        EMBEDDING_DIM, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 ("conv_out", "prompt_features")))

  def embed(self, pixels: jax.Array) -> jax.Array:
    """MedCLIP-normalised pixels [B, H, W, 1] -> `MedCLIPVisionModel.forward`'s output [B, 512]
    float32 (global average pool, then the projection; not normalised)."""
    fmap = self.resnet(pixels, train=False)
    return self.projection(jnp.mean(fmap.astype(jnp.float32), axis=(1, 2)))

  def __call__(self, images: jax.Array) -> jax.Array:
    embedding = self.embed(to_medclip_pixels(images, self.input_normalization, self.image_size))
    norm = jnp.linalg.norm(embedding, axis=-1, keepdims=True)
    unit = embedding / jnp.maximum(norm, 1e-12)
    return (unit * math.sqrt(EMBEDDING_DIM))[:, None, :]


def describe_prompts(cfg: ModelConfig) -> Optional[str]:
  """One line saying what the prompt module uses, or None when prompts are off entirely."""
  if cfg.prompt_encoder:
    learnable = (f"{cfg.num_prompts} learnable prompt token(s) and " if cfg.num_prompts else "")
    return (f"prompt training: {learnable}1 token of frozen MedCLIP ResNet-50 features "
            f"from {cfg.prompt_encoder}")
  if cfg.num_prompts:
    return (f"prompt training: model.prompt_encoder is empty, so only the {cfg.num_prompts} "
            "learnable prompt token(s) are used (no frozen image-text features; convert "
            f"MedCLIP's weights with `{CONVERT_COMMAND}` and set model.prompt_encoder=DIR)")
  return None


# ----------------------------------------------------------------------------- converted files

def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{"collection/flattened/path": shape} of every variable of `MedCLIPImageEncoder`."""
  return dict(_expected_shapes())


@functools.lru_cache(maxsize=None)
def _expected_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  model = MedCLIPImageEncoder(image_size=64)
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                        jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)))
  flat = traverse_util.flatten_dict(shapes, sep="/")
  return tuple(sorted((k, tuple(v.shape)) for k, v in flat.items()))


def save_variables(directory, variables: dict, metadata: dict) -> pathlib.Path:
  """Writes `variables` ({'params', 'batch_stats'} of MedCLIPImageEncoder) and `metadata` (merged
  into the JSON) to `directory`; returns the directory. Raises PromptEncoderError when a variable
  is missing, extra or of the wrong shape (nothing is written then)."""
  flat = {k: np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(nn.meta.unbox(variables), sep="/").items()}
  _check_shapes(f"the variables to save in {directory}",
                {k: v.shape for k, v in flat.items()})
  folder = pathlib.Path(directory)
  folder.mkdir(parents=True, exist_ok=True)
  tmp = folder / (WEIGHTS_FILE + ".tmp.npz")
  np.savez(tmp, **flat)
  os.replace(tmp, folder / WEIGHTS_FILE)  # a converter cut short leaves no half-written file
  meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
          "embedding_dim": EMBEDDING_DIM, "image_size": MEDCLIP_IMAGE_SIZE,
          "image_mean": MEDCLIP_MEAN, "image_std": MEDCLIP_STD,
          "num_parameters": int(sum(v.size for k, v in flat.items() if k.startswith("params/"))),
          **metadata}
  (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
  return folder


def _check_shapes(where: str, shapes: dict[str, tuple]) -> None:
  want = expected_shapes()
  missing = sorted(set(want) - set(shapes))
  extra = sorted(set(shapes) - set(want))
  wrong = [f"{k} {tuple(shapes[k])} (expected {want[k]})" for k in sorted(set(want) & set(shapes))
           if tuple(shapes[k]) != want[k]]
  problems = []
  if missing:
    problems.append(f"missing {_some(missing)}")
  if extra:
    problems.append(f"unexpected {_some(extra)}")
  if wrong:
    problems.append(f"wrong shapes {_some(wrong)}")
  if problems:
    raise PromptEncoderError(f"{where} do not fit MedCLIP's ResNet-50 vision tower: "
                             + "; ".join(problems))


def _some(names: list[str], limit: int = 8) -> str:
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return "[" + ", ".join(names[:limit]) + "]" + more


def _fix(directory) -> str:
  command = CONVERT_COMMAND.replace("DIR", str(directory))
  return (f"convert MedCLIP's ResNet-50 weights into it with `{command}`, or set "
          "model.prompt_encoder='' to train with the learnable prompts only")


def _npz_headers(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{array name: (shape, dtype)} of an .npz, read from the .npy headers without the data."""
  out = {}
  with zipfile.ZipFile(path) as z:
    for info in z.infolist():
      with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
      out[info.filename.removesuffix(".npy")] = (tuple(shape), np.dtype(dtype))
  return out


def check_directory(directory) -> dict:
  """The metadata of a converted directory, after checking its JSON and the names, shapes and
  dtypes of its arrays (headers only; the weights are not read). Raises PromptEncoderError with
  one paragraph naming the path and the fix."""
  folder = pathlib.Path(directory)
  if not folder.is_dir():
    raise PromptEncoderError(f"the prompt-encoder directory {folder} does not exist; "
                             + _fix(directory))
  meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
  for path in (meta_path, weights_path):
    if not path.is_file():
      raise PromptEncoderError(f"{folder} is not a converted prompt-encoder directory ({path.name} "
                               "is missing); " + _fix(directory))
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise PromptEncoderError(f"{meta_path} cannot be read ({e}); " + _fix(directory)) from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise PromptEncoderError(f"{meta_path} is not a cnx2rg-jax prompt-encoder file (no \"format\": "
                             f"{FORMAT!r}); " + _fix(directory))
  if meta.get("format_version") != FORMAT_VERSION or meta.get("architecture") != ARCHITECTURE:
    raise PromptEncoderError(
        f"{meta_path} holds format_version {meta.get('format_version')!r}, architecture "
        f"{meta.get('architecture')!r}; this code reads version {FORMAT_VERSION} of "
        f"{ARCHITECTURE!r} only; " + _fix(directory))
  try:
    headers = _npz_headers(weights_path)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise PromptEncoderError(f"{weights_path} is not a readable .npz file ({e}); "
                             + _fix(directory)) from None
  bad_dtype = sorted(k for k, (_, dtype) in headers.items() if dtype != np.float32)
  if bad_dtype:
    raise PromptEncoderError(f"{weights_path}: arrays {_some(bad_dtype)} are not float32; "
                             + _fix(directory))
  _check_shapes(str(weights_path), {k: shape for k, (shape, _) in headers.items()})
  return meta


def load_variables(directory) -> dict:
  """{'params': ..., 'batch_stats': ...} (NumPy float32) of a converted directory, checked by
  `check_directory` first (raises PromptEncoderError)."""
  check_directory(directory)
  path = pathlib.Path(directory) / WEIGHTS_FILE
  try:
    with np.load(path) as npz:
      flat = {k: np.asarray(npz[k], np.float32) for k in npz.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise PromptEncoderError(f"{path} cannot be read ({e}); " + _fix(directory)) from None
  return traverse_util.unflatten_dict(flat, sep="/")
