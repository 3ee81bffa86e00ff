"""What the R2Gen and R2GenCMN converters share: the config with a checkpoint's dims, the workdir
and row checks, the conversion record's head and the command line's common flags and error exit.

Both peers train with the same tokenizer, annotation and trainer checkpoint, so only the tensor
map and the architecture check differ (convert.r2gen_weights, convert.r2gen_cmn_weights).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Callable, Mapping, Optional

from cnx2rg_jax.convert.r2gen_weights import ConversionError
from cnx2rg_jax.text import english

DATASETS = tuple(english.ENGLISH_CLEANERS)  # iu_xray, mimic_cxr


def check_new_workdir(workdir: str | os.PathLike) -> None:
  """Refuses a workdir that already holds checkpoints (a conversion never overwrites one)."""
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
    raise ConversionError(f"{ckpt_dir} already holds checkpoints; convert into a new --workdir")


def configure(config, dims: Mapping[str, Any], threshold: int, manual_dir: str = "",
              max_seq_length: Optional[int] = None):
  """`config` (a configs/ file's) set to the checkpoint's dims, threshold, data folder and
  max_seq_length (decode.max_len and data.max_tokens); returns (config, the `--config.KEY=VALUE`
  overrides that differ from the config file)."""
  overrides = []
  if max_seq_length is not None and max_seq_length != config.decode.max_len:
    if max_seq_length < 1:
      raise ConversionError(f"--max_seq_length must be >= 1, got {max_seq_length}")
    config.decode.max_len = config.data.max_tokens = max_seq_length
    overrides += [f"--config.decode.max_len={max_seq_length}",
                  f"--config.data.max_tokens={max_seq_length}"]
  if manual_dir:
    config.data.manual_dir = manual_dir
    overrides.append(f"--config.data.manual_dir={manual_dir}")
  for key, value in dims.items():
    if not key.startswith("_") and config.model[key] != value:
      overrides.append(f"--config.model.{key}={value}")
      config.model[key] = value
  if config.text.min_count != threshold:
    overrides.append(f"--config.text.min_count={threshold}")
    config.text.min_count = threshold
  return config, overrides


def check_rows(have: int, size: int, name: str, annotation: str, dataset: str,
               threshold: int) -> None:
  """Refuses a checkpoint tensor `name` whose `have` rows are not the rebuilt vocabulary's
  `size` (its tokens + row 0)."""
  if have != size:
    raise ConversionError(
        f"the vocabulary rebuilt from {annotation} (dataset {dataset}, threshold {threshold}) "
        f"has {size - 1} tokens + row 0 = {size} rows, but the checkpoint's {name} has "
        f"{have}; pass the annotation and --threshold the model was trained with")


def model_config(config, dims: Mapping[str, Any], vocab_size: int):
  """The model's config for `config`, checked against the checkpoint's visual feature width."""
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  mcfg = factory.model_config(config.model, vocab_size=vocab_size,
                              max_len=config.data.max_tokens)
  if mcfg.d_vf != dims["_d_vf"]:
    raise ConversionError(f"att_embed takes {dims['_d_vf']} features, the ResNet-"
                          f"{mcfg.resnet_depth} gives {mcfg.d_vf}")
  return mcfg


def record(checkpoint: str, annotation: str, dataset: str, threshold: int, meta: Mapping,
           r2gen_size: int, vocab_size: int, dims: Mapping[str, Any], config_file: str,
           overrides: list, command: str) -> dict:
  """What DIR/r2gen_conversion.json records of a conversion (`r2gen_size`: the peer's rows)."""
  return {"checkpoint": os.path.abspath(checkpoint), "annotation": os.path.abspath(annotation),
          "dataset": dataset, "threshold": threshold, "r2gen_epoch": meta["epoch"],
          "r2gen_monitor_best": meta["monitor_best"], "r2gen_vocab_size": r2gen_size - 1,
          "vocab_size": vocab_size,
          "model": {k: v for k, v in dims.items() if not k.startswith("_")},
          "config": f"{config_file}:{dataset}", "config_overrides": overrides,
          "converted_by": command}


def add_input_args(p: argparse.ArgumentParser, peer: str) -> None:
  """--checkpoint, --annotation, --dataset, --threshold, --workdir, --num_heads."""
  p.add_argument("--checkpoint", required=True, help=f"{peer}'s model_best.pth (needs torch)")
  p.add_argument("--annotation", required=True,
                 help="the annotation.json the model was trained on (its vocabulary is rebuilt)")
  p.add_argument("--dataset", required=True, choices=DATASETS)
  p.add_argument("--threshold", required=True, type=int,
                 help=f"{peer}'s --threshold (3 for IU X-Ray, 10 for MIMIC-CXR by its scripts)")
  p.add_argument("--workdir", required=True, help="the new workdir")
  p.add_argument("--num_heads", type=int, default=8, help=f"{peer}'s --num_heads (default 8)")


def add_data_args(p: argparse.ArgumentParser, peer: str, config_file: str,
                  manual_dir_help: str) -> None:
  """--config (default `config_file`), --max_seq_length and --manual_dir."""
  p.add_argument("--config", default=config_file,
                 help=f"the config file of the converted run: its --dataset variant with the "
                 f"checkpoint's dims (default {config_file}); eval and predict runs use it")
  p.add_argument("--max_seq_length", type=int, default=None,
                 help=f"{peer}'s --max_seq_length (default {config_file}'s: 60 IU, 100 MIMIC)")
  p.add_argument("--manual_dir", default=None, help=manual_dir_help)


def add_pickle_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument("--allow_pickle", action="store_true",
                 help="torch.load(weights_only=False): only for a checkpoint you trust")


def run_cli(args: argparse.Namespace, convert: Callable[[], dict]) -> int:
  """Prints one JSON line (the record of `convert()`) and returns 0, or 2 with a one-paragraph
  error."""
  try:
    result = convert()
  except (FileNotFoundError, ImportError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(args.workdir), **result}))
  return 0
