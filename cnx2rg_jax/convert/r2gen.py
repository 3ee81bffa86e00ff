"""An R2Gen checkpoint (cuhksz-nlp/R2Gen's model_best.pth) -> a cnx2rg-jax workdir.

    python -m cnx2rg_jax.convert.r2gen --checkpoint=model_best.pth --annotation=annotation.json \
        --dataset=iu_xray|mimic_cxr --threshold=N --workdir=DIR [--config=configs/r2gen.py]

then `python launch.py --config=configs/r2gen.py:<dataset> --workdir=DIR --mode=eval|predict`.
Nothing is downloaded; reading the .pth needs torch (torch.load on the CPU, weights_only=True
unless --allow_pickle is given).

What R2Gen's trainer saves and where each tensor goes: `r2gen_weights` (the state_dict ->
our Flax variables).

Vocabulary. R2Gen's tokenizer cleans the training reports (cnx2rg_jax/text/english.py holds its
cleaning), keeps the words seen at least `threshold` times, appends '<unk>', sorts, and numbers
them from 1; row 0 is bos, eos and pad at once. Ours has pad 0, bos 1, eos 2, unk 3, then the
same words sorted. The converter rebuilds both from the annotation, checks that R2Gen's count
(+ 1 for row 0) equals the checkpoint's embedding rows, and maps rows: our words and unk take
their R2Gen rows; pad, bos and eos take R2Gen's row 0 in the embedding; in the logit layer eos
takes row 0 and pad and bos are never predicted (kernel 0, bias r2gen_weights.SUPPRESSED_LOGIT, whose softmax
weight is exactly 0 in float32), so our log-probabilities over the other ids equal R2Gen's.

The model dims are read from the tensors' shapes, except the head counts, which no tensor
shows: --num_heads and --rm_num_heads (R2Gen's defaults, 8).

The workdir: DIR/config.json (configs/r2gen.py:<dataset> with the checkpoint's dims, the
threshold, decode.max_len = data.max_tokens = --max_seq_length when given, and data.manual_dir =
--manual_dir, by default the annotation's folder),
DIR/tokenizer/vocab.json, DIR/checkpoints/0/ (an Orbax train state: the converted weights and a
fresh optimizer state, step 0), DIR/r2gen_conversion.json (what was converted, from where, and
the --config overrides an eval needs if the dims differ from configs/r2gen.py), and
DIR/provenance.json (R2Gen's training set as the annotation names it: `inference.provenance`).

The checkpoint holds no training features, so its predictions have no OOD score
(`inference.ood`) unless --ood_data=FOLDER names the training data (annotation.json and the
images, R2Gen's layout): its train split is then built (TFDS, in --data_dir) and encoded by the
converted model, and DIR/ood/ is written, calibrated on its val split.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import pathlib
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cnx2rg_jax import config_files
from cnx2rg_jax.convert import r2gen_common as common
from cnx2rg_jax.convert.r2gen_weights import (ConversionError, convert_state_dict,
                                              embedding_rows, infer_dims, read_checkpoint)
from cnx2rg_jax.text import english
from cnx2rg_jax.text import tokenizer as tok
from cnx2rg_jax.text.word_vocab import WordTokenizer

DATASETS = common.DATASETS  # iu_xray, mimic_cxr
R2GEN_UNK = "<unk>"
R2GEN_SPECIAL_ROW = 0  # bos = eos = pad in R2Gen
COMMAND = "python -m cnx2rg_jax.convert.r2gen"
CONFIG_FILE = "configs/r2gen.py"  # --config's default: its --dataset variant is the run's config

# ----------------------------------------------------------------------------- vocabulary


def read_annotation(path: str | os.PathLike) -> dict:
  """R2Gen's annotation.json ({"train": [{"report": ...}, ...], ...}); errors name the entry."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"annotation file {path} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      ann = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConversionError(f"annotation file {path} is not readable JSON ({e})") from e
  if not isinstance(ann, dict) or not isinstance(ann.get("train"), list):
    raise ConversionError(f"annotation file {path} has no 'train' list (R2Gen's layout is "
                          '{"train": [...], "val": [...], "test": [...]})')
  for i, entry in enumerate(ann["train"]):
    if not isinstance(entry, dict) or not isinstance(entry.get("report"), str):
      ident = entry.get("id", "?") if isinstance(entry, dict) else "?"
      raise ConversionError(f"annotation file {path}: train entry {i} (id {ident}) has no str "
                            "'report'")
  return ann


def r2gen_vocabulary(train_reports: Sequence[str], dataset: str, threshold: int) -> list[str]:
  """R2Gen's idx2token as a list: element i is the token of R2Gen id i + 1 (id 0 is bos/eos/pad).

  R2Gen's Tokenizer.create_vocabulary: clean each training report, split at whitespace, keep
  the words counted at least `threshold` times, add '<unk>', sort.
  """
  if dataset not in DATASETS:
    raise ConversionError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
  if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
    raise ConversionError(f"threshold must be an int >= 1, got {threshold!r}")
  clean = english.ENGLISH_CLEANERS[dataset]
  counts = collections.Counter()
  for report in train_reports:
    counts.update(clean(report).split())
  return sorted([w for w, c in counts.items() if c >= threshold] + [R2GEN_UNK])


def build_tokenizer(train_reports: Sequence[str], dataset: str, threshold: int
                    ) -> tuple[WordTokenizer, np.ndarray]:
  """(our English word tokenizer of R2Gen's vocabulary, rows) with rows[our id] = R2Gen's id
  of the same token (pad, bos and eos -> R2Gen's 0)."""
  r2gen_tokens = r2gen_vocabulary(train_reports, dataset, threshold)
  words = [t for t in r2gen_tokens if t != R2GEN_UNK]
  if set(words) & set(tok.SPECIAL_TOKENS):
    raise ConversionError(f"R2Gen's vocabulary holds a token of ours "
                          f"{sorted(set(words) & set(tok.SPECIAL_TOKENS))}; cannot map it")
  tokenizer = WordTokenizer(tok.SPECIAL_TOKENS + tuple(words), language="en",
                            min_count=threshold)
  r2gen_id = {t: i + 1 for i, t in enumerate(r2gen_tokens)}
  rows = np.empty((tokenizer.vocab_size,), np.int64)
  for i, t in enumerate(tokenizer.tokens):
    if t == tok.SPECIAL_TOKENS[tok.UNK_ID]:
      rows[i] = r2gen_id[R2GEN_UNK]
    elif i < tok.NUM_SPECIAL:
      rows[i] = R2GEN_SPECIAL_ROW
    else:
      rows[i] = r2gen_id[t]
  return tokenizer, rows


# ----------------------------------------------------------------------------- workdir


def r2gen_config(base, dims: Mapping[str, Any], threshold: int, manual_dir: str = "",
                 max_seq_length: Optional[int] = None):
  """A copy of `base` (configs/r2gen.py:<dataset>) with the checkpoint's dims, threshold, data
  folder and max_seq_length (decode.max_len and data.max_tokens); plus the `--config.KEY=VALUE`
  overrides that differ from the config file."""
  return common.configure(copy.deepcopy(base), dims, threshold, manual_dir, max_seq_length)


def write_workdir(workdir: str | os.PathLike, config, tokenizer: WordTokenizer,
                  variables: dict) -> None:
  """DIR/config.json, DIR/tokenizer/, DIR/checkpoints/0 (TrainState: the variables, a fresh
  optimizer state, step 0) as --mode=eval/predict read them."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import checkpoints as ckpt_lib  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import optimizer, state as state_lib  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  ckpt_dir = workdir / "checkpoints"
  common.check_new_workdir(workdir)
  tx, _ = optimizer.make_optimizer(config.train, steps_per_epoch=1)
  params = jax.tree.map(jnp.asarray, variables["params"])
  batch_stats = jax.tree.map(jnp.asarray, variables["batch_stats"])
  # Unsharded arrays: the loader (inference.trained) restores them into its own shardings and
  # checks every shape against the model first. `convert_state_dict` has checked the params.
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               batch_stats=batch_stats, opt_state=tx.init(params))
  workdir.mkdir(parents=True, exist_ok=True)
  tokenizer.save(workdir / "tokenizer")
  from cnx2rg_jax import config_checks  # pylint: disable=import-outside-toplevel
  config_checks.check(config)
  config_checks.write_config(config, str(workdir))
  with ckpt_lib.Checkpoints(str(ckpt_dir), keep_last=config.train.keep_last,
                            keep_best=config.train.keep_best) as ckpts:
    ckpts.save(0, state, force=True)


def trained_on(annotation: str, dataset: str, num_train: int, checkpoint: str,
               epoch: Any) -> dict:
  """The provenance record (`inference.provenance`) of a converted R2Gen checkpoint."""
  return {"dataset": f"{dataset} (R2Gen checkpoint)", "config": "release", "build": None,
          "train_studies": int(num_train), "language": "en", "synthetic": False,
          "source": f"{os.path.abspath(checkpoint)}, trained by R2Gen on the train split of "
                    f"{os.path.abspath(annotation)} (epoch {epoch})", "recorded": True}


def write_ood_reference(config, workdir: str, ood_data: str, data_dir: str = "") -> str:
  """DIR/ood/ from the training data in `ood_data` (annotation.json + images): its train split
  encoded by the converted model, calibrated on its val split; returns the folder."""
  from cnx2rg_jax.inference import run_facts  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import trained  # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  config.data.manual_dir = ood_data
  if data_dir:
    config.data.data_dir = data_dir
  run = trained.load(config, workdir, log=lambda line: print(line, file=sys.stderr))
  run_facts.record_run(config, workdir, run, log=lambda line: print(line, file=sys.stderr),
                       keep_provenance=True, with_ood=True)
  return os.path.join(os.path.abspath(workdir), "ood")


def convert(checkpoint: str, annotation: str, dataset: str, threshold: int, workdir: str, *,
            config, config_file: str = CONFIG_FILE, num_heads: int = 8, rm_num_heads: int = 8,
            allow_pickle: bool = False, manual_dir: Optional[str] = None,
            max_seq_length: Optional[int] = None, ood_data: Optional[str] = None,
            data_dir: str = "") -> dict:
  """The whole conversion; returns what r2gen_conversion.json records. `config` is
  `config_file`'s `dataset` variant (configs/r2gen.py:<dataset>), which the record names for the
  workdir's eval runs; the checkpoint's dims go into a copy. `manual_dir` (default:
  the annotation's folder) is the data.manual_dir that eval runs of the workdir must use;
  `ood_data`, a folder of the training data (annotation.json + images) to compute the OOD
  reference from, built in `data_dir` (default: TFDS's)."""
  if manual_dir is None:
    manual_dir = os.path.dirname(os.path.abspath(annotation))
  common.check_new_workdir(workdir)
  ann = read_annotation(annotation)
  tokenizer, rows = build_tokenizer([e["report"] for e in ann["train"]], dataset, threshold)
  sd, meta = read_checkpoint(checkpoint, allow_pickle)
  if "encoder_decoder.memory_matrix" in sd:  # R2GenCMN's cross-modal memory
    raise ConversionError(f"{checkpoint} is an R2GenCMN checkpoint (it has "
                          "encoder_decoder.memory_matrix), not an R2Gen one; convert it with "
                          "python -m cnx2rg_jax.convert.r2gen_cmn")
  dims = infer_dims(sd, num_heads, rm_num_heads)
  r2gen_size = int(rows.max()) + 1  # R2Gen's vocab_size + 1 (row 0)
  common.check_rows(embedding_rows(sd), r2gen_size,
                    "embedding encoder_decoder.model.tgt_embed.0.lut.weight", annotation, dataset,
                    threshold)
  config, overrides = r2gen_config(config, dims, threshold, manual_dir, max_seq_length)
  mcfg = common.model_config(config, dims, tokenizer.vocab_size)
  variables = convert_state_dict(sd, mcfg, rows)
  write_workdir(workdir, config, tokenizer, variables)
  record = common.record(checkpoint, annotation, dataset, threshold, meta, r2gen_size,
                         tokenizer.vocab_size, dims, config_file, overrides, COMMAND)
  from cnx2rg_jax.inference import provenance  # pylint: disable=import-outside-toplevel
  provenance.write(workdir, trained_on(annotation, dataset, len(ann["train"]), checkpoint,
                                       meta["epoch"]), 0, "converted R2Gen checkpoint")
  record["ood_reference"] = (write_ood_reference(config, workdir, ood_data, data_dir)
                             if ood_data else None)
  tok.write_json(os.path.join(workdir, "r2gen_conversion.json"), record)
  return record


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=COMMAND, description="Convert an R2Gen checkpoint "
                              "(cuhksz-nlp/R2Gen model_best.pth) into a cnx2rg-jax workdir.")
  common.add_input_args(p, "R2Gen")
  p.add_argument("--rm_num_heads", type=int, default=8, help="R2Gen's --rm_num_heads (8)")
  common.add_data_args(p, "R2Gen", CONFIG_FILE,
                       "the data folder --mode=eval will read (data.manual_dir; default: the "
                       "annotation's folder)")
  p.add_argument("--ood_data", default=None,
                 help="optional: the training data (a folder with annotation.json and the "
                 "images) to compute the OOD score's reference features from; without it, "
                 "predictions say the OOD score is unavailable")
  p.add_argument("--data_dir", default="",
                 help="where --ood_data's TFDS build goes (default $TFDS_DATA_DIR or "
                 "~/tensorflow_datasets)")
  common.add_pickle_arg(p)
  return p


def main(argv: Optional[list[str]] = None) -> int:
  """Prints one JSON line (the record) and returns 0, or 2 with a one-paragraph error."""
  args = _parser().parse_args(argv)
  return common.run_cli(args, lambda: convert(
      args.checkpoint, args.annotation, args.dataset, args.threshold, args.workdir,
      config=config_files.load(f"{args.config}:{args.dataset}"), config_file=args.config,
      num_heads=args.num_heads, rm_num_heads=args.rm_num_heads, allow_pickle=args.allow_pickle,
      manual_dir=args.manual_dir, max_seq_length=args.max_seq_length, ood_data=args.ood_data,
      data_dir=args.data_dir))


if __name__ == "__main__":
  sys.exit(main())
