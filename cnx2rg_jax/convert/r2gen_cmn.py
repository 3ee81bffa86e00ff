"""An R2GenCMN checkpoint (cuhksz-nlp/R2GenCMN's model_best.pth) -> a cnx2rg-jax workdir.

    python -m cnx2rg_jax.convert.r2gen_cmn --checkpoint=model_best.pth \
        --annotation=annotation.json --dataset=iu_xray|mimic_cxr --threshold=N --workdir=DIR

then `python launch.py --config=configs/r2gen_cmn.py:<dataset> --workdir=DIR --mode=eval|predict`
(plus the overrides it prints). Nothing is downloaded; reading the .pth needs torch.

R2GenCMN's tokenizer, annotation and trainer checkpoint are R2Gen's, so the vocabulary rebuild and
row map (convert.r2gen.build_tokenizer), the annotation reader and the workdir writer are the R2Gen
converter's; the tensors go where `r2gen_cmn_weights` says. An R2Gen checkpoint is refused with the
command that converts it, and so is a checkpoint whose embedding or logit rows do not match the
vocabulary rebuilt from the annotation and --threshold. Head count and top-k show in no tensor:
--num_heads (8) and --topk (32), R2GenCMN's defaults. The workdir's DIR/r2gen_conversion.json
records what was converted (with "architecture": "cmn") and the --config overrides an eval needs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Mapping, Optional

from cnx2rg_jax.convert import r2gen as r2gen_conv
from cnx2rg_jax.convert import r2gen_cmn_weights as weights
from cnx2rg_jax.convert.r2gen_weights import ConversionError, read_checkpoint
from cnx2rg_jax.text import tokenizer as tok

COMMAND = "python -m cnx2rg_jax.convert.r2gen_cmn"
RECORD = "r2gen_conversion.json"


def cmn_config(dataset: str, dims: Mapping[str, Any], threshold: int, manual_dir: str = "",
               max_seq_length: Optional[int] = None):
  """configs/r2gen_cmn.py:<dataset> with the checkpoint's dims, threshold, data folder and
  max_seq_length; plus the `--config.KEY=VALUE` overrides that differ from the config file."""
  from configs import r2gen_cmn as cmn_configs  # pylint: disable=import-outside-toplevel
  config = cmn_configs.get_config(dataset)
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


def convert(checkpoint: str, annotation: str, dataset: str, threshold: int, workdir: str, *,
            num_heads: int = 8, topk: int = 32, allow_pickle: bool = False,
            manual_dir: Optional[str] = None, max_seq_length: Optional[int] = None) -> dict:
  """The whole conversion; returns what DIR/r2gen_conversion.json records."""
  if manual_dir is None:
    manual_dir = os.path.dirname(os.path.abspath(annotation))
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
    raise ConversionError(f"{ckpt_dir} already holds checkpoints; convert into a new --workdir")
  ann = r2gen_conv.read_annotation(annotation)
  tokenizer, rows = r2gen_conv.build_tokenizer([e["report"] for e in ann["train"]], dataset,
                                               threshold)
  sd, meta = read_checkpoint(checkpoint, allow_pickle)
  dims = weights.infer_dims(sd, num_heads, topk)
  size = int(rows.max()) + 1  # R2GenCMN's vocab_size + 1 (row 0: bos = eos = pad)
  for name in (weights.LUT, weights.ED + "logit.weight", weights.ED + "logit.bias"):
    have = weights.need(sd, name, 1 if name.endswith("bias") else 2).shape[0]
    if have != size:
      raise ConversionError(
          f"the vocabulary rebuilt from {annotation} (dataset {dataset}, threshold {threshold}) "
          f"has {size - 1} tokens + row 0 = {size} rows, but the checkpoint's {name} has "
          f"{have}; pass the annotation and --threshold the model was trained with")
  config, overrides = cmn_config(dataset, dims, threshold, manual_dir, max_seq_length)
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  mcfg = factory.model_config(config.model, vocab_size=tokenizer.vocab_size,
                              max_len=config.data.max_tokens)
  if mcfg.d_vf != dims["_d_vf"]:
    raise ConversionError(f"att_embed takes {dims['_d_vf']} features, the ResNet-"
                          f"{mcfg.resnet_depth} gives {mcfg.d_vf}")
  variables = weights.convert_state_dict(sd, mcfg, rows)
  r2gen_conv.write_workdir(workdir, config, tokenizer, variables)
  record = {"architecture": "cmn", "checkpoint": os.path.abspath(checkpoint),
            "annotation": os.path.abspath(annotation), "dataset": dataset,
            "threshold": threshold, "r2gen_epoch": meta["epoch"],
            "r2gen_monitor_best": meta["monitor_best"], "r2gen_vocab_size": size - 1,
            "vocab_size": tokenizer.vocab_size,
            "model": {k: v for k, v in dims.items() if not k.startswith("_")},
            "config": f"configs/r2gen_cmn.py:{dataset}", "config_overrides": overrides,
            "converted_by": COMMAND}
  tok.write_json(os.path.join(workdir, RECORD), record)
  return record


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=COMMAND, description="Convert an R2GenCMN checkpoint "
                              "(cuhksz-nlp/R2GenCMN model_best.pth) into a cnx2rg-jax workdir.")
  p.add_argument("--checkpoint", required=True, help="R2GenCMN's model_best.pth (needs torch)")
  p.add_argument("--annotation", required=True,
                 help="the annotation.json the model was trained on (its vocabulary is rebuilt)")
  p.add_argument("--dataset", required=True, choices=r2gen_conv.DATASETS)
  p.add_argument("--threshold", required=True, type=int,
                 help="R2GenCMN's --threshold (3 for IU X-Ray, 10 for MIMIC-CXR by its scripts)")
  p.add_argument("--workdir", required=True, help="the new workdir")
  p.add_argument("--num_heads", type=int, default=8, help="R2GenCMN's --num_heads (default 8)")
  p.add_argument("--topk", type=int, default=32, help="R2GenCMN's --topk (default 32)")
  p.add_argument("--max_seq_length", type=int, default=None,
                 help="R2GenCMN's --max_seq_length (default configs/r2gen_cmn.py's: 60 IU, 100 "
                 "MIMIC)")
  p.add_argument("--manual_dir", default=None,
                 help="the data folder --mode=eval will read (default: the annotation's folder)")
  p.add_argument("--allow_pickle", action="store_true",
                 help="torch.load(weights_only=False): only for a checkpoint you trust")
  return p


def main(argv: Optional[list[str]] = None) -> int:
  """Prints one JSON line (the record) and returns 0, or 2 with a one-paragraph error."""
  args = _parser().parse_args(argv)
  try:
    record = convert(args.checkpoint, args.annotation, args.dataset, args.threshold,
                     args.workdir, num_heads=args.num_heads, topk=args.topk,
                     allow_pickle=args.allow_pickle, manual_dir=args.manual_dir,
                     max_seq_length=args.max_seq_length)
  except (FileNotFoundError, ImportError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(args.workdir), **record}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
