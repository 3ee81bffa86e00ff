"""Checks of a CN-X2RG config before anything runs, and of a workdir against the config.

`check(config)` raises `ConfigError` naming the first bad key, its value, what is allowed and how
to fix it. `check_workdir(config, workdir)` raises `WorkdirError` when `workdir` holds a run
whose model, tokenizer or data differ from the config's (resuming or evaluating it with other
dims would fail deep inside a checkpoint restore, or silently mix two datasets).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable

import jax

from cnx2rg_jax import sharding
from cnx2rg_jax.errors import ConfigError, WorkdirError
from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.inference import evaluate, generate
from cnx2rg_jax.models import config as model_config
from cnx2rg_jax.models import prompt_encoder
from cnx2rg_jax.text import pkuseg_segmenter, word_vocab
from cnx2rg_jax.training import optimizer
from tfds_cncxr import annotate

# Keys that must equal the workdir's config.json to resume or evaluate the run there.
RUN_KEYS = ("model", "text", "data.name", "data.manual_dir", "data.num_examples",
            "data.synthetic_seed", "data.synthetic_image_size", "data.language",
            "data.split_seed", "data.image_size", "data.crop_size", "data.normalization",
            "data.max_tokens")
# Keys under RUN_KEYS that may differ: where to read something the workdir keeps a copy of.
LOCAL_KEYS = ("text.pkuseg_model",)
CONFIG_FILE = "config.json"
# RUN_KEYS added after runs were saved: a config.json without one was made with this value.
ADDED_RUN_KEYS = {"model.prompt_encoder": "", "model.prompt_encoder_image_size": 224,
                  "model.architecture": "r2gen", "model.cmm_size": 2048, "model.cmm_dim": 512,
                  "model.cmn_topk": 32,
                  "text.segmenter": "jieba"}


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _require(config, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
  value = _get(config, key)
  try:
    good = ok(value)
  except (TypeError, ValueError):
    good = False
  if not good:
    raise ConfigError(f"config key {key}={value!r} is not allowed: it must be {allowed}. Fix it "
                      f"in the config file or on the command line (--config.{key}=...)")


def _one_of(choices: Iterable) -> tuple[Callable[[Any], bool], str]:
  choices = tuple(choices)
  return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


_POS = (lambda v: v >= 1, "an integer >= 1")
_NONNEG = (lambda v: v >= 0, ">= 0")
_POS_FLOAT = (lambda v: v > 0, "> 0")


def check(config) -> None:
  """Raises ConfigError for the first unusable value of a configs/cnx2rg.py config."""
  rules = [
      ("variant", lambda v: v in ("demo", "paper", "cmn", "cmn_demo")
       or v.startswith(("ablation=", "r2gen:", "r2gen_cmn:")),
       "'demo', 'paper', 'cmn', 'cmn_demo', 'ablation=NAME', 'r2gen:DATASET' (configs/r2gen.py) "
       "or 'r2gen_cmn:DATASET' (configs/r2gen_cmn.py)"),
      ("data.name", *_one_of(("synthetic", "release"))),
      ("data.num_examples", lambda v: v >= 10, "at least 10 (each split needs examples)"),
      ("data.image_size", lambda v: v >= 32, "at least 32 pixels"),
      ("data.stored_image_size", lambda v: v in (-1, 0) or v >= config.data.image_size,
       f"-1 (data.image_size), 0 (the files' own size) or at least data.image_size "
       f"({config.data.image_size}): images are never upsampled"),
      ("data.crop_size", lambda v: 32 <= v <= config.data.image_size,
       f"between 32 and data.image_size ({config.data.image_size})"),
      ("data.normalization", *_one_of(("zscore", "imagenet"))),
      ("data.max_tokens", lambda v: v >= 3, "at least 3 (bos, one token, eos)"),
      ("data.num_workers", *_NONNEG), ("data.num_shards", *_POS),
      ("data.graph_augment.probability", lambda v: 0 <= v <= 1, "in [0, 1]"),
      ("data.annotate", *_one_of(("auto",) + annotate.ANNOTATORS)),
      ("data.annotate", lambda v: v in ("auto", "none") or config.data.language == "zh",
       f"'auto' or 'none' with data.language={config.data.language!r}: the rule labeler and "
       "CN-RadGraph read Chinese only (give 'keywords'/'entities' in the annotation instead)"),
      ("data.cn_radgraph_dir", lambda v: v or config.data.annotate != "cn_radgraph",
       "the workdir of a trained CN-RadGraph when data.annotate='cn_radgraph'"),
      ("text.tokenizer", *_one_of(("word", "sentencepiece"))),
      ("text.min_count", *_POS), ("text.vocab_size", lambda v: v >= 8, "at least 8"),
      ("text.segmenter", *_one_of(word_vocab.SEGMENTERS)),
      ("model.resnet_depth", *_one_of(sorted(model_config.RESNET_FEATURES))),
      ("model.resnet_width", *_POS),
      ("model.d_model", lambda v: v % config.model.num_heads == 0,
       f"a multiple of model.num_heads ({config.model.num_heads})"),
      ("model.rm_d_model", lambda v: v % config.model.rm_num_heads == 0,
       f"a multiple of model.rm_num_heads ({config.model.rm_num_heads})"),
      ("model.num_encoder_layers", *_POS), ("model.num_decoder_layers", *_POS),
      ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
      ("model.visual_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
      ("model.dtype", *_one_of(model_config.DTYPES)),
      ("model.architecture", *_one_of(model_config.ARCHITECTURES)),
      ("model.cmm_dim", lambda v: config.model.architecture != "cmn" or v == config.model.d_model,
       f"model.d_model ({config.model.d_model}) when model.architecture='cmn'"),
      ("model.cmm_size", *_POS),
      ("model.cmn_topk", lambda v: 1 <= v <= config.model.cmm_size,
       f"between 1 and model.cmm_size ({config.model.cmm_size})"),
      ("decode.beam_size", *_POS),
      ("decode.method", *_one_of(generate.DECODE_METHODS)), ("decode.mbr_samples", *_POS),
      ("decode.mbr_temperature", *_POS_FLOAT), ("decode.mbr_seed", *_NONNEG),
      ("decode.mbr_utility", *_one_of(clinical.CLINICAL_SCORERS)),
      ("decode.mbr_keyword_weight", *_NONNEG),
      ("decode.mbr_utility", lambda v: v != "cn_radgraph" or config.eval.cn_radgraph_dir,
       "'labeler' unless eval.cn_radgraph_dir names a trained CN-RadGraph"),
      ("decode.max_len", lambda v: 1 <= v <= config.data.max_tokens,
       f"between 1 and data.max_tokens ({config.data.max_tokens}), the decoder's positions"),
      ("eval.clinical_scorer", *_one_of(clinical.CLINICAL_SCORERS)),
      ("eval.cn_radgraph_dir", lambda v: v or config.eval.clinical_scorer != "cn_radgraph",
       "the workdir of a trained CN-RadGraph when eval.clinical_scorer='cn_radgraph'"),
      ("eval.batch_size", *_POS), ("eval.val_examples", *_NONNEG),
      ("eval.references", *_one_of(evaluate.REFERENCES)),
      ("mesh.strategy", *_one_of(tuple(sharding.STRATEGIES))),
      ("mesh.max_replicated_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
      ("mesh.axes", lambda v: "data" in v and set(v) <= {"data", "model"} and len(set(v)) == len(v),
       "a tuple of distinct axis names from 'data' and 'model' that includes 'data'"),
      ("mesh.shape", lambda v: len(v) == len(config.mesh.axes)
       and all(n == -1 or n >= 1 for n in v) and list(v).count(-1) <= 1,
       "one size per mesh.axes entry, each >= 1 or a single -1 (the remaining devices)"),
      ("train.batch_size", *_POS), ("train.num_steps", *_POS), ("train.log_every", *_POS),
      ("train.checkpoint_every", *_NONNEG), ("train.eval_every", *_NONNEG),
      ("train.keep_last", *_POS), ("train.keep_best", *_NONNEG),
      ("train.lr_visual", *_POS_FLOAT), ("train.lr_rest", *_POS_FLOAT),
      ("train.lr_schedule", *_one_of(optimizer.SCHEDULES)),
      ("train.lr_step_epochs", *_POS_FLOAT), ("train.lr_gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
      ("train.lr_end_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
      ("train.warmup_steps", *_NONNEG), ("train.weight_decay", *_NONNEG),
      ("train.clip_value", *_NONNEG), ("train.keyword_weight", *_NONNEG),
      ("train.length_buckets", *_POS),
      ("train.adam_b1", lambda v: 0 <= v < 1, "in [0, 1)"),
      ("train.adam_b2", lambda v: 0 <= v < 1, "in [0, 1)"), ("train.adam_eps", *_POS_FLOAT),
      ("decode.mbr_keyword_weight", lambda v: v == 0 or config.train.keyword_weight > 0,
       "0 unless the keyword head is trained (train.keyword_weight > 0)"),
      ("card.enabled", lambda v: isinstance(v, bool), "true or false"),
      ("card.num_cases", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
       "an integer >= 0 (0 shows every case)"),
  ]
  for key, ok, allowed in rules:
    _require(config, key, ok, allowed)
  _check_segmenter(config)
  _check_prompt_encoder(config.model)


def _check_segmenter(config) -> None:
  """text.segmenter="pkuseg": a word tokenizer of Chinese, spacy-pkuseg installed, and
  text.pkuseg_model a local model directory."""
  t = config.text
  if t.segmenter == "jieba":
    return
  fix = "; or use --config.text.segmenter=jieba (the default)"
  if t.tokenizer != "word":
    raise ConfigError(f"config key text.segmenter={t.segmenter!r} does not fit text.tokenizer="
                      f"{t.tokenizer!r}: a {t.tokenizer} tokenizer splits reports itself; set "
                      f"--config.text.tokenizer=word to segment words with {t.segmenter}{fix}")
  if config.data.language != "zh":
    raise ConfigError(f"config key text.segmenter={t.segmenter!r} does not fit data.language="
                      f"{config.data.language!r}: {t.segmenter} segments Chinese, and "
                      f"{config.data.language!r} reports are split at whitespace{fix}")
  if not pkuseg_segmenter.is_installed():
    raise ConfigError(f"config key text.segmenter={t.segmenter!r} needs the spacy-pkuseg "
                      f"package, which is not installed: run `pip install spacy-pkuseg`{fix}")
  try:
    pkuseg_segmenter.check_model_dir(t.pkuseg_model)
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(f"config key text.pkuseg_model={t.pkuseg_model!r} cannot be used: {e}"
                      f"{fix}") from None


def _check_prompt_encoder(m) -> None:
  """model.prompt_encoder: "" or a converted MedCLIP directory that reads (names, shapes), with
  model.prompt_feature_dim the width of its features."""
  if not m.prompt_encoder:
    return
  try:
    prompt_encoder.check_directory(m.prompt_encoder)
  except prompt_encoder.PromptEncoderError as e:
    raise ConfigError(f"config key model.prompt_encoder={m.prompt_encoder!r} cannot be used: "
                      f"{e}") from None
  if m.prompt_feature_dim != prompt_encoder.EMBEDDING_DIM:
    raise ConfigError(
        f"config key model.prompt_feature_dim={m.prompt_feature_dim!r} does not fit "
        f"model.prompt_encoder={m.prompt_encoder!r}: MedCLIP's image features are "
        f"{prompt_encoder.EMBEDDING_DIM} wide; set --config.model.prompt_feature_dim="
        f"{prompt_encoder.EMBEDDING_DIM}")
  if m.prompt_encoder_image_size < 32:
    raise ConfigError(f"config key model.prompt_encoder_image_size="
                      f"{m.prompt_encoder_image_size!r} is not allowed: it must be at least 32 "
                      "(MedCLIP was trained at 224)")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _run_values(config_dict: dict) -> dict[str, Any]:
  flat = _flat(config_dict)
  return {k: v for k, v in flat.items() if k not in LOCAL_KEYS
          and any(k == key or k.startswith(key + ".") for key in RUN_KEYS)}


def check_workdir(config, workdir: str) -> None:
  """Raises WorkdirError when DIR/config.json disagrees with `config` on a RUN_KEYS key."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    return
  try:
    saved = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{path} cannot be read ({e}); it is not a cnx2rg-jax workdir, or it is "
                       "damaged. Use another --workdir") from None
  if saved.get("task", "cnx2rg") != config.get("task", "cnx2rg"):
    raise WorkdirError(f"{workdir} holds a {saved.get('task')!r} run, not a CN-X2RG one; use "
                       "another --workdir")
  ours, theirs = _run_values(config.to_dict()), _run_values(saved)
  theirs = {**{k: v for k, v in ADDED_RUN_KEYS.items() if k in ours}, **theirs}
  diffs = [f"{k} ({theirs.get(k, 'absent')!r} there, {ours.get(k, 'absent')!r} here)"
           for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
  if diffs:
    raise WorkdirError(
        f"--workdir={workdir} holds a run made with another model, tokenizer or dataset: "
        + "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        + f". Use another --workdir for this config, or give the values in {path} to continue "
        "or evaluate that run")


def write_config(config, workdir: str) -> None:
  """DIR/config.json, the resolved config (written by process 0 only)."""
  if jax.process_index() != 0:
    return
  folder = pathlib.Path(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n", encoding="utf-8")
