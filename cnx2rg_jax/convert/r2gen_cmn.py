"""An R2GenCMN checkpoint (cuhksz-nlp/R2GenCMN's model_best.pth) -> a cnx2rg-jax workdir.

    python -m cnx2rg_jax.convert.r2gen_cmn --checkpoint=model_best.pth \
        --annotation=annotation.json --dataset=iu_xray|mimic_cxr --threshold=N --workdir=DIR \
        [--config=configs/r2gen_cmn.py]

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
import copy
import os
import sys
from typing import Any, Mapping, Optional

from cnx2rg_jax import config_files
from cnx2rg_jax.convert import r2gen as r2gen_conv
from cnx2rg_jax.convert import r2gen_common as common
from cnx2rg_jax.convert import r2gen_cmn_weights as weights
from cnx2rg_jax.convert.r2gen_weights import ConversionError, read_checkpoint  # noqa: F401 (its error)
from cnx2rg_jax.text import tokenizer as tok

COMMAND = "python -m cnx2rg_jax.convert.r2gen_cmn"
RECORD = "r2gen_conversion.json"
CONFIG_FILE = "configs/r2gen_cmn.py"  # --config's default: its --dataset variant is the config


def cmn_config(base, dims: Mapping[str, Any], threshold: int, manual_dir: str = "",
               max_seq_length: Optional[int] = None):
  """A copy of `base` (configs/r2gen_cmn.py:<dataset>) with the checkpoint's dims, threshold,
  data folder and max_seq_length; plus the `--config.KEY=VALUE` overrides that differ from the
  config file."""
  return common.configure(copy.deepcopy(base), dims, threshold, manual_dir, max_seq_length)


def convert(checkpoint: str, annotation: str, dataset: str, threshold: int, workdir: str, *,
            config, config_file: str = CONFIG_FILE, num_heads: int = 8, topk: int = 32,
            allow_pickle: bool = False, manual_dir: Optional[str] = None,
            max_seq_length: Optional[int] = None) -> dict:
  """The whole conversion; returns what DIR/r2gen_conversion.json records. `config` is
  `config_file`'s `dataset` variant (configs/r2gen_cmn.py:<dataset>), which the record names;
  the checkpoint's dims go into a copy."""
  if manual_dir is None:
    manual_dir = os.path.dirname(os.path.abspath(annotation))
  common.check_new_workdir(workdir)
  ann = r2gen_conv.read_annotation(annotation)
  tokenizer, rows = r2gen_conv.build_tokenizer([e["report"] for e in ann["train"]], dataset,
                                               threshold)
  sd, meta = read_checkpoint(checkpoint, allow_pickle)
  dims = weights.infer_dims(sd, num_heads, topk)
  size = int(rows.max()) + 1  # R2GenCMN's vocab_size + 1 (row 0: bos = eos = pad)
  for name in (weights.LUT, weights.ED + "logit.weight", weights.ED + "logit.bias"):
    common.check_rows(weights.need(sd, name, 1 if name.endswith("bias") else 2).shape[0], size,
                      name, annotation, dataset, threshold)
  config, overrides = cmn_config(config, dims, threshold, manual_dir, max_seq_length)
  mcfg = common.model_config(config, dims, tokenizer.vocab_size)
  variables = weights.convert_state_dict(sd, mcfg, rows)
  r2gen_conv.write_workdir(workdir, config, tokenizer, variables)
  record = {"architecture": "cmn",
            **common.record(checkpoint, annotation, dataset, threshold, meta, size,
                            tokenizer.vocab_size, dims, config_file, overrides,
                            COMMAND)}
  tok.write_json(os.path.join(workdir, RECORD), record)
  return record


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=COMMAND, description="Convert an R2GenCMN checkpoint "
                              "(cuhksz-nlp/R2GenCMN model_best.pth) into a cnx2rg-jax workdir.")
  common.add_input_args(p, "R2GenCMN")
  p.add_argument("--topk", type=int, default=32, help="R2GenCMN's --topk (default 32)")
  common.add_data_args(p, "R2GenCMN", CONFIG_FILE,
                       "the data folder --mode=eval will read (default: the annotation's folder)")
  common.add_pickle_arg(p)
  return p


def main(argv: Optional[list[str]] = None) -> int:
  """Prints one JSON line (the record) and returns 0, or 2 with a one-paragraph error."""
  args = _parser().parse_args(argv)
  return common.run_cli(args, lambda: convert(
      args.checkpoint, args.annotation, args.dataset, args.threshold, args.workdir,
      config=config_files.load(f"{args.config}:{args.dataset}"), config_file=args.config,
      num_heads=args.num_heads, topk=args.topk, allow_pickle=args.allow_pickle,
      manual_dir=args.manual_dir, max_seq_length=args.max_seq_length))


if __name__ == "__main__":
  sys.exit(main())
