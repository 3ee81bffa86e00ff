"""MedCLIP's ResNet-50 vision tower (a local PyTorch checkpoint) -> the frozen prompt encoder.

    python -m cnx2rg_jax.convert.medclip --checkpoint=pytorch_model.bin --output=DIR

then train with `--config.model.prompt_encoder=DIR --config.model.prompt_feature_dim=512`.
Nothing is downloaded. Reading a .bin/.pt/.pth checkpoint needs torch (torch.load with
weights_only=True on the CPU); a .safetensors file does not.

What MedCLIP releases (github.com/RyanWangZf/MedCLIP, read at commit 9c3396f:
`medclip/modeling_medclip.py`, `constants.py`, `medclip_resnet_weight.txt`): the ResNet variant
is the zip that `medclip_resnet_weight.txt` points to (medclip-pretrained.zip), holding
`pytorch_model.bin`, the state dict of the whole `MedCLIPModel`:
  vision_model.model.<torchvision resnet50 names>  conv1.weight, bn1.{weight,bias,running_mean,
                           running_var,num_batches_tracked}, layer{1..4}.{j}.conv{1,2,3}.weight,
                           ....bn{1,2,3}.*, ....downsample.{0,1}.*; `MedCLIPVisionModel` keeps
                           torchvision's resnet50 as `self.model`
  vision_model.model.fc.weight   [512, 2048]: the resnet's `fc`, replaced by a bias-free
                           Linear(2048 -> 512), the projection into the image-text space
  text_model.*                   the BioClinicalBERT text tower and its projection (ignored)
  logit_scale                    the contrastive temperature (ignored)
`MedCLIPVisionModel.forward` repeats a 1-channel image to 3 channels and returns the projection,
unnormalised; `MedCLIPModel.encode_image` then divides it by its L2 norm. The Swin-T variant
(medclip-vit-pretrained.zip: vision_model.model.embeddings.* / encoder.* and
vision_model.projection_head.weight) is not supported.

Mapping into `MedCLIPImageEncoder` (models/prompt_encoder.py), done by
`convert_torchvision.convert_resnet_state_dict` for the ResNet:
  vision_model.model.conv1.weight [64, 3, 7, 7]  -> params/resnet/conv1/kernel [7, 7, 1, 64]
      (summed over RGB: exact for the gray image MedCLIP repeats to 3 channels)
  vision_model.model.layerI.J.convK.weight       -> params/resnet/layerI_J/convK/kernel (OIHW->HWIO)
  vision_model.model.layerI.J.downsample.0.weight -> params/resnet/layerI_J/downsample_conv/kernel
  ....bnK.weight / .bias                         -> params/resnet/.../bnK/scale / bias
  ....bnK.running_mean / .running_var            -> batch_stats/resnet/.../bnK/mean / var
  ....downsample.1.*                             -> .../downsample_bn/...
  vision_model.model.fc.weight [512, 2048]       -> params/projection/kernel [2048, 512]
  *.num_batches_tracked, text_model.*, logit_scale: ignored.
Any other tensor is an error naming it, and so is any Flax variable left unfilled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
from typing import Mapping, Optional

import numpy as np

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.models import convert_torchvision as conv_tv
from cnx2rg_jax.models import prompt_encoder

VISION_PREFIX = "vision_model.model."
STANDALONE_PREFIX = "model."  # the state dict of a MedCLIPVisionModel on its own
TEXT_PREFIX = "text_model."
IGNORED = ("logit_scale",)
SWIN_MARKERS = ("vision_model.projection_head.", VISION_PREFIX + "embeddings.",
                VISION_PREFIX + "encoder.")
ONLY_RESNET = ("only MedCLIP's ResNet-50 vision tower (medclip-pretrained.zip, tensors "
               "vision_model.model.conv1.weight ... vision_model.model.fc.weight) is supported")


class MedCLIPConversionError(UserError):
  """A checkpoint that is not (or not wholly) MedCLIP's ResNet-50 vision tower."""


def read_checkpoint(path) -> dict[str, np.ndarray]:
  """{name: array} of a local checkpoint: .safetensors (no torch needed) or anything else
  through torch.load(weights_only=True, map_location='cpu'), a bare state dict or one under
  'state_dict' / 'model' ('module.' prefixes stripped)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist (nothing is downloaded; unzip "
                            "MedCLIP's medclip-pretrained.zip and pass its pytorch_model.bin)")
  if path.lower().endswith(".safetensors"):
    return conv_tv.load_torch_weights(path)
  try:
    return conv_tv._read_torch(path)  # pylint: disable=protected-access
  except ImportError:
    raise
  except ValueError as e:
    raise MedCLIPConversionError(str(e)) from None
  except Exception as e:  # torch.load raises several types for a file that is not a checkpoint
    raise MedCLIPConversionError(f"{path} cannot be read as a PyTorch state dict "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                                 ) from None


def vision_tower(tensors: Mapping[str, np.ndarray], source: str
                 ) -> tuple[str, dict[str, np.ndarray]]:
  """(prefix, the vision tower's tensors under torchvision's names, i.e. the prefix stripped);
  the prefix is 'vision_model.model.' (a whole MedCLIPModel) or 'model.' (a MedCLIPVisionModel).

  Raises MedCLIPConversionError for a Swin-T (ViT) checkpoint, a text-tower-only one, one with
  no vision tower, and one with tensors outside the vision tower, the text tower and
  logit_scale (naming them)."""
  swin = sorted(k for k in tensors if k.startswith(SWIN_MARKERS))
  if swin:
    raise MedCLIPConversionError(f"{source} holds MedCLIP's Swin-T (ViT) vision tower ({swin[0]}, "
                                 f"...); {ONLY_RESNET}")
  if any(k.startswith(VISION_PREFIX) for k in tensors):
    prefix = VISION_PREFIX
  elif STANDALONE_PREFIX + "fc.weight" in tensors:
    prefix = STANDALONE_PREFIX
  elif any(k.startswith(TEXT_PREFIX) for k in tensors):
    raise MedCLIPConversionError(f"{source} holds MedCLIP's text tower only (text_model.*), no "
                                 f"vision tower; {ONLY_RESNET}")
  else:
    raise MedCLIPConversionError(f"{source} holds no MedCLIP vision tower (no tensor named "
                                 f"{VISION_PREFIX}*; its first names: {sorted(tensors)[:5]}); "
                                 + ONLY_RESNET)
  stray = sorted(k for k in tensors if not (k.startswith((prefix, TEXT_PREFIX)) or k in IGNORED))
  if stray:
    raise MedCLIPConversionError(f"{source}: cannot place tensor(s) {stray}: they are neither in "
                                 f"the vision tower ({prefix}*) nor in the ignored text tower or "
                                 "logit_scale")
  return prefix, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def convert_vision_tower(tower: Mapping[str, np.ndarray], source: str,
                         prefix: str = VISION_PREFIX) -> dict:
  """torchvision-named ResNet-50 + `fc` projection tensors -> {'params', 'batch_stats'} of
  `MedCLIPImageEncoder`, float32. Raises MedCLIPConversionError naming every tensor that cannot
  be placed and every Flax variable left unfilled (or of the wrong shape)."""
  tower = dict(tower)
  fc = {k: tower.pop(k) for k in list(tower) if k.startswith("fc.")}
  unplaced = sorted(prefix + k for k in fc if k != "fc.weight")
  if unplaced:
    raise MedCLIPConversionError(f"{source}: cannot place tensor(s) {unplaced} (MedCLIP's "
                                 "projection is a bias-free Linear(2048 -> 512): fc.weight only)")
  try:
    resnet = conv_tv.convert_resnet_state_dict(tower, 50, in_channels=1)
  except ValueError as e:
    raise MedCLIPConversionError(f"{source}: MedCLIP's ResNet-50 vision tower: {e} (tensor "
                                 f"names relative to {prefix!r})") from None
  if "fc.weight" not in fc:
    raise MedCLIPConversionError(
        f"{source}: Flax variable params/projection/kernel left unfilled: there is no "
        f"{prefix}fc.weight (MedCLIP's 2048 -> 512 projection)")
  weight = np.asarray(fc["fc.weight"], np.float32)
  want = (prompt_encoder.EMBEDDING_DIM, prompt_encoder.BACKBONE_FEATURES)
  if weight.shape != want:
    raise MedCLIPConversionError(f"{source}: {prefix}fc.weight has shape {weight.shape}; MedCLIP's "
                                 f"projection is {want} (Linear(2048 -> 512))")
  return {"params": {"resnet": resnet["params"], "projection": {"kernel": weight.T.copy()}},
          "batch_stats": {"resnet": resnet["batch_stats"]}}


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def convert(checkpoint, output) -> dict:
  """Converts `checkpoint` into the directory `output` (prompt_encoder.npz + .json); returns
  the metadata written."""
  checkpoint = os.path.abspath(os.fspath(checkpoint))
  tensors = read_checkpoint(checkpoint)
  prefix, tower = vision_tower(tensors, checkpoint)
  variables = convert_vision_tower(tower, checkpoint, prefix)
  folder = prompt_encoder.save_variables(output, variables, {
      "source": checkpoint, "source_bytes": os.path.getsize(checkpoint),
      "source_sha256": _sha256(checkpoint),
      "source_tensors": sum(1 for k in tower if not k.endswith("num_batches_tracked")),
      "converted_by": "python -m cnx2rg_jax.convert.medclip"})
  return json.loads((pathlib.Path(folder) / prompt_encoder.META_FILE).read_text(encoding="utf-8"))


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m cnx2rg_jax.convert.medclip",
      description="Convert MedCLIP's ResNet-50 vision tower (pytorch_model.bin of "
      "medclip-pretrained.zip) into the frozen prompt encoder of cnx2rg-jax.")
  p.add_argument("--checkpoint", required=True,
                 help="local MedCLIP checkpoint: pytorch_model.bin (needs torch) or .safetensors")
  p.add_argument("--output", required=True,
                 help="directory to write prompt_encoder.npz and prompt_encoder.json into; then "
                 "set --config.model.prompt_encoder=DIR --config.model.prompt_feature_dim=512")
  return p


def main(argv: Optional[list[str]] = None) -> int:
  """Runs the CLI; prints one JSON line (the metadata) and returns 0, or 2 with a one-paragraph
  error on stderr."""
  args = _parser().parse_args(argv)
  try:
    meta = convert(args.checkpoint, args.output)
  except (FileNotFoundError, ImportError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"output": os.path.abspath(args.output), **meta}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
