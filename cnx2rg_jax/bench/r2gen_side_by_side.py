"""R2Gen's own PyTorch code and ours, side by side in one process on the same machine.

    R2GEN_DIR=/path/to/R2Gen python -m cnx2rg_jax.bench.r2gen_side_by_side \
        [--settings=760:60,2000:100] [--batch=16] [--beam=3] [--repeats=3] [--warmup=1] \
        [--parts] [--dims=r2gen|tiny] [--only=train,decode] [--config=configs/cnx2rg.py:paper]

For each setting (vocabulary:length) it builds R2Gen's R2GenModel (imported from R2GEN_DIR,
random weights; tests/helpers/r2gen_harness.py supplies a torchvision-free ResNet) and ours at the
same dims (`--dims=r2gen`: ResNet-101 at 224 pixels, d 512, 3+3 layers, 8 heads, 3 memory slots;
`tiny`: ResNet-18 at 224 pixels (R2Gen pools a 7x7 map), d 32, 1+1 layers, a smoke run), one view
a study, and times:

- the train step: forward, backward and optimizer step on a batch of random images and reports of
  full length. R2Gen: its trainer's step (model in train mode, its loss, clip_grad_value_ 0.1,
  Adam with amsgrad and its two learning rates); ours: the jitted train step of `launch.py`
  (`training.steps`, the same optimizer settings from configs/cnx2rg.py:paper or --config, without
  prompts or the keyword loss, as R2Gen has neither);
- decode: the beam search (beam `--beam`) from the images, ResNet included, every report run to
  full length (R2Gen always runs max_seq_length steps; ours gets min_len = max_len and R2Gen's
  beam bookkeeping, model.r2gen_beam_search).

Each is run `--warmup` times (ours: the first call compiles), then `--repeats` timed times: min
and median of the wall and of this process's CPU seconds (all threads). Torch runs on as many
threads as the machine has cores. One JSON line per side and setting, then one with the ratios
(R2Gen's median seconds / ours: above 1 means ours is faster). `--parts` adds our train step's
per-part table (cnx2rg_jax/bench/train_parts.py) and R2Gen's, one JSON line each.
Needs torch and a checkout of cuhksz-nlp/R2Gen; run from the repository root. Nothing downloads.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import sys
import tempfile

import numpy as np

from cnx2rg_jax import config_files
from cnx2rg_jax.bench.timing import timed

DIMS = {
    "r2gen": dict(image_size=224, resnet_depth=101, d_vf=2048, d_model=512, num_heads=8,
                  num_layers=3),
    "tiny": dict(image_size=224, resnet_depth=18, d_vf=512, d_model=32, num_heads=4,
                 num_layers=1),
}


def parse_settings(text: str) -> list[tuple[int, int]]:
  """'760:60,2000:100' -> [(760, 60), (2000, 100)] (vocabulary words, report length)."""
  out = []
  for item in text.split(","):
    vocab, _, length = item.partition(":")
    if not (vocab.strip().isdigit() and length.strip().isdigit()):
      raise ValueError(f"--settings item {item!r}: want VOCAB:LENGTH, e.g. 760:60")
    out.append((int(vocab), int(length)))
  return out


# ---- R2Gen's side ----------------------------------------------------------------------------

def _annotation(path: str, vocab: int, threshold: int, seed: int) -> None:
  """Training reports in which exactly vocab - 1 tokens reach the threshold (+ <unk>)."""
  from tests.helpers import r2gen_harness as harness  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  words = [f"w{i:04d}" for i in range(vocab - 2)]  # + "." + <unk>
  reports = []
  for start in range(0, len(words) * threshold, 40):
    idx = [(start + j) // threshold for j in range(40) if (start + j) // threshold < len(words)]
    rng.shuffle(idx)
    reports.append(" ".join(words[i] for i in idx) + " .")
  harness.write_annotation(path, reports)


class R2GenSide:
  """R2Gen's model, optimizer and inputs for one setting."""

  def __init__(self, r2gen_dir: str, vocab: int, length: int, batch: int, beam: int, dims: dict):
    import torch  # pylint: disable=import-outside-toplevel
    from tests.helpers import r2gen_harness as harness  # pylint: disable=import-outside-toplevel
    self.torch, self.harness = torch, harness
    tmp = tempfile.mkdtemp(prefix="r2gen_side_by_side_")
    ann = os.path.join(tmp, "annotation.json")
    _annotation(ann, vocab, 3, seed=0)
    module = harness.import_r2gen(r2gen_dir)
    d = dims
    args = harness.r2gen_args(
        ann_path=ann, dataset_name="mimic_cxr", threshold=3, max_seq_length=length,
        beam_size=beam, visual_extractor=f"resnet{d['resnet_depth']}", d_vf=d["d_vf"],
        d_model=d["d_model"], d_ff=d["d_model"], num_heads=d["num_heads"],
        num_layers=d["num_layers"], rm_d_model=d["d_model"], rm_num_heads=d["num_heads"])
    self.model, tokenizer = harness.build_model(module, args, seed=0)
    if tokenizer.get_vocab_size() != vocab:
      raise RuntimeError(f"R2Gen's vocabulary has {tokenizer.get_vocab_size()} words, not {vocab}")
    rng = np.random.default_rng(0)
    size = d["image_size"]
    self.images = torch.from_numpy(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
    ids = rng.integers(1, vocab + 1, size=(batch, length))
    ids[:, 0] = 0  # R2Gen's bos
    self.report_ids = torch.from_numpy(ids.astype(np.int64))
    self.report_masks = torch.ones((batch, length), dtype=torch.float32)
    ve = list(map(id, self.model.visual_extractor.parameters()))
    # R2Gen's build_optimizer with its main.py defaults (Adam, amsgrad, 5e-5 / 1e-4, wd 5e-5)
    self.optimizer = torch.optim.Adam(
        [{"params": self.model.visual_extractor.parameters(), "lr": 5e-5},
         {"params": [p for p in self.model.parameters() if id(p) not in ve], "lr": 1e-4}],
        weight_decay=5e-5, amsgrad=True)
    self.compute_loss = importlib.import_module("modules.loss").compute_loss  # R2Gen's own
    self.length = length

  def train_step(self) -> None:
    """R2Gen's trainer: forward in train mode, its loss, backward, clip by value, Adam."""
    torch = self.torch
    self.model.train()
    output = self.model(self.images, self.report_ids, mode="train")
    loss = self.compute_loss(output, self.report_ids, self.report_masks)
    self.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_value_(self.model.parameters(), 0.1)
    self.optimizer.step()

  def decode(self) -> None:
    self.model.eval()
    with self.torch.no_grad(), self.harness.cpu_only():
      seq = self.model(self.images, mode="sample")
    if seq.shape[1] != self.length:
      raise RuntimeError(f"R2Gen decoded {seq.shape[1]} tokens, not {self.length}")


# ---- our side --------------------------------------------------------------------------------

def our_config(base, vocab: int, length: int, dims: dict):
  """A copy of `base` (configs/cnx2rg.py:paper, --config) at R2Gen's dims: no prompts, no keyword
  loss, R2Gen's beam."""
  c = copy.deepcopy(base)
  m = c.model
  m.num_prompts, m.prompt_feature_dim = 0, 0
  m.resnet_depth, m.d_model, m.d_ff = dims["resnet_depth"], dims["d_model"], dims["d_model"]
  m.num_heads = m.rm_num_heads = dims["num_heads"]
  m.rm_d_model = dims["d_model"]
  m.num_encoder_layers = m.num_decoder_layers = dims["num_layers"]
  with c.unlocked():
    m.r2gen_beam_search = True
  c.train.keyword_weight = 0.0
  c.data.crop_size, c.data.max_tokens = dims["image_size"], length
  c.decode.max_len = length
  c.bench.train_vocab_size = vocab + 1  # R2Gen's logits: its words + row 0
  return c


class OurSide:
  """Our jitted train step and cached beam search for one setting."""

  def __init__(self, base, vocab: int, length: int, batch: int, beam: int, dims: dict):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from cnx2rg_jax import sharding  # pylint: disable=import-outside-toplevel
    from cnx2rg_jax.bench import decode as decode_bench  # pylint: disable=import-outside-toplevel
    from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
    from cnx2rg_jax.bench import train as bench_train  # pylint: disable=import-outside-toplevel
    from cnx2rg_jax.training import (  # pylint: disable=import-outside-toplevel
        optimizer, state as state_lib, steps)
    self.jax = jax
    c = self.config = our_config(base, vocab, length, dims)
    size, vocab_size = dims["image_size"], vocab + 1
    self.model = model = factory.build_model(c, vocab_size)
    mesh = sharding.mesh_from_config(c.mesh)
    tx, schedules = optimizer.make_optimizer(c.train, steps_per_epoch=100)
    self.tx = tx
    self.state, shardings = state_lib.create_state(model, tx, mesh, image_size=size,
                                                   num_tokens=length - 1, seed=0,
                                                   strategy=c.mesh.strategy)
    rng = np.random.default_rng(0)
    image_shape = model.config.image_shape(batch, size)
    random_batch = bench_train._random_batch  # pylint: disable=protected-access
    local = random_batch(rng, image_shape, length, vocab_size)
    shapes = {k: v.shape for k, v in local.items()}
    self.batch = sharding.global_batch(local, mesh)
    self.step = steps.make_train_step(model, tx, mesh, shardings, shapes, keyword_weight=0.0,
                                      dropout_seed=0, lr_fn=schedules["rest"])
    decode_fn = decode_bench._decode_fn  # pylint: disable=protected-access
    self.decode_fn = decode_fn(model, impl="cached", beam_size=beam, max_len=length,
                               with_encoder=True)
    self.images = jnp.asarray(rng.normal(size=image_shape), jnp.float32)
    self.length = length

  @property
  def variables(self) -> dict:
    """The current weights (each train step donates the state it is given)."""
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}

  def train_step(self) -> None:
    self.state, metrics = self.step(self.state, self.batch)
    self.jax.block_until_ready(metrics)

  def decode(self) -> None:
    ids = self.jax.block_until_ready(self.decode_fn(self.variables, self.images))
    if ids.shape[-1] != self.length:
      raise RuntimeError(f"ours decoded {ids.shape[-1]} tokens, not {self.length}")


# ---- the run ---------------------------------------------------------------------------------

def _rate(seconds: float, batch: int) -> float:
  return round(batch / seconds, 4)


def run_setting(r2gen_dir: str, vocab: int, length: int, args, emit, config) -> None:
  """Both sides' lines (and the ratios, and with --parts the part tables) for one setting;
  `config` is --config's (configs/cnx2rg.py:paper), set to R2Gen's dims by `our_config`."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  dims = DIMS[args.dims]
  common = {"vocab": vocab, "max_len": length, "batch": args.batch, "beam": args.beam,
            "views": 1, "dims": args.dims, **dims, "cpus": os.cpu_count()}
  sides = {}
  r2gen = R2GenSide(r2gen_dir, vocab, length, args.batch, args.beam, dims)
  ours = OurSide(config, vocab, length, args.batch, args.beam, dims)
  for name, side, extra in (
      ("r2gen_torch", r2gen, {"torch_threads": torch.get_num_threads(),
                              "torch": torch.__version__}),
      ("cnx2rg_jax", ours, {"device": jax.devices()[0].device_kind, "jax": jax.__version__})):
    line = {"side": name, **common, **extra}
    if "train" in args.only:
      line["train_step"] = t = timed(side.train_step, args.warmup, args.repeats)
      line["train_examples_per_sec"] = _rate(t["wall_median"], args.batch)
    if "decode" in args.only:
      line["decode"] = t = timed(side.decode, args.warmup, args.repeats)
      line["decode_reports_per_sec"] = _rate(t["wall_median"], args.batch)
    sides[name] = line
    emit(line)
  ratios = {"ratios": "r2gen_seconds / ours (above 1: ours faster)", **common}
  for part in ("train_step", "decode"):
    if part in sides["cnx2rg_jax"]:
      a, b = sides["r2gen_torch"][part], sides["cnx2rg_jax"][part]
      ratios[part] = {k: round(a[k] / max(b[k], 1e-9), 3)
                      for k in ("wall_min", "wall_median", "cpu_min", "cpu_median")}
  emit(ratios)
  if args.parts:
    from cnx2rg_jax.bench import train_parts  # pylint: disable=import-outside-toplevel
    emit({"parts": "cnx2rg_jax", **common,
          **train_parts.our_parts(ours, args.warmup, args.repeats)})
    emit({"parts": "r2gen_torch", **common,
          **train_parts.r2gen_parts(r2gen, args.warmup, args.repeats)})


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--settings", default="760:60,2000:100",
                 help="comma-separated VOCAB:LENGTH (R2Gen's IU X-Ray 760:60, ours 2000:100)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3, help="timed runs of each, after the warm-up")
  p.add_argument("--warmup", type=int, default=1, help="untimed runs first (ours compiles)")
  p.add_argument("--dims", choices=sorted(DIMS), default="r2gen")
  p.add_argument("--only", default="train,decode", help="train, decode or both")
  p.add_argument("--parts", action="store_true", help="also time the train step part by part")
  p.add_argument("--config", default="configs/cnx2rg.py:paper",
                 help="our side's config file and variant, set to R2Gen's dims")
  args = p.parse_args(argv)
  args.only = set(args.only.split(","))
  from tests.helpers import r2gen_harness as harness  # pylint: disable=import-outside-toplevel
  directory = harness.r2gen_dir()
  problems = []
  if directory is None:
    problems.append(f"set {harness.ENV} to a checkout of cuhksz-nlp/R2Gen (it has no "
                    "models/r2gen.py and modules/encoder_decoder.py)")
  if not args.only or not args.only <= {"train", "decode"}:
    problems.append(f"--only={','.join(sorted(args.only))}: choose train, decode or both")
  try:
    settings = parse_settings(args.settings)
  except ValueError as e:
    problems.append(str(e))
  if args.batch < 1 or args.beam < 1 or args.repeats < 1 or args.warmup < 0:
    problems.append("--batch, --beam and --repeats must be >= 1, --warmup >= 0")
  try:
    config = config_files.load(args.config)
  except OSError as e:
    problems.append(f"--config={args.config} cannot be read ({e})")
  if problems:
    print("error: " + "; ".join(problems), file=sys.stderr)
    return 2
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count() or 1)
  emit = lambda line: print(json.dumps(line), flush=True)  # noqa: E731
  for vocab, length in settings:
    run_setting(directory, vocab, length, args, emit, config)
  return 0


if __name__ == "__main__":
  sys.exit(main())
