"""Decode throughput of R2Gen's own PyTorch beam search against ours on the same checkpoint.

    R2GEN_DIR=/path/to/R2Gen python scripts/r2gen_decode_bench.py [--max_len=60] [--batch=16]

Builds R2Gen's R2GenModel (imported from R2GEN_DIR, random weights, torchvision-free ResNet from
tests/helpers/r2gen_harness.py) at R2Gen's dims (ResNet-101 at 224 pixels, d 512, 3+3 layers,
8 heads, 3 memory slots) with a `--vocab`-word vocabulary, times its beam search (beam 3) on a
batch of random images, saves it as R2Gen's trainer does, converts it with
`python -m cnx2rg_jax.convert.r2gen`, and times our cached beam search on that workdir through
`--mode=bench_decode`'s code (`bench.workdir`). Both decode every report to full length: R2Gen's
beam search always runs max_seq_length steps (a finished beam keeps being extended with its
score lowered by 1000), ours is given min_len = max_len. Both time the whole path from images
(the ResNet included). Prints one JSON line per side (wall seconds and this process's CPU
seconds of the timed call, which a busy machine disturbs less), then one with the speed-ups.
Our side is loaded by `--mode=bench_decode`'s own code for `bench.workdir`.
Needs torch (CPU is fine) and a checkout of cuhksz-nlp/R2Gen; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import r2gen_harness as harness  # noqa: E402  pylint: disable=wrong-import-position


def _annotation(path: str, vocab: int, threshold: int, seed: int) -> None:
  """Training reports in which exactly `vocab` - 1 tokens reach the threshold (+ <unk>)."""
  rng = np.random.default_rng(seed)
  words = [f"w{i:04d}" for i in range(vocab - 2)]  # + "." + <unk>
  reports = []
  for start in range(0, len(words) * threshold, 40):
    idx = [(start + j) // threshold for j in range(40) if (start + j) // threshold < len(words)]
    rng.shuffle(idx)
    reports.append(" ".join(words[i] for i in idx) + " .")
  harness.write_annotation(path, reports)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--max_len", type=int, default=60, help="R2Gen's max_seq_length (IU 60)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--vocab", type=int, default=760, help="R2Gen's vocab_size (IU X-Ray: 760)")
  p.add_argument("--repeats", type=int, default=1, help="timed R2Gen calls (each is slow)")
  p.add_argument("--ours_repeats", type=int, default=2, help="timed calls of ours, after one "
                 "compiling call")
  p.add_argument("--small", action="store_true", help="ResNet-18, d 64: a smoke run")
  args = p.parse_args(argv)
  directory = harness.r2gen_dir()
  if directory is None:
    print(f"error: set {harness.ENV} to a checkout of cuhksz-nlp/R2Gen", file=sys.stderr)
    return 2
  import torch  # pylint: disable=import-outside-toplevel

  tmp = tempfile.mkdtemp(prefix="r2gen_bench_")
  ann = os.path.join(tmp, "annotation.json")
  _annotation(ann, args.vocab, 3, seed=0)
  r2gen = harness.import_r2gen(directory)
  dims = (dict(visual_extractor="resnet18", d_vf=512, d_model=64, d_ff=64, num_heads=4,
               rm_d_model=64, rm_num_heads=4) if args.small else {})
  r2gen_args = harness.r2gen_args(ann_path=ann, dataset_name="mimic_cxr", threshold=3,
                                  max_seq_length=args.max_len, beam_size=args.beam, **dims)
  model, tokenizer = harness.build_model(r2gen, r2gen_args, seed=0)
  assert tokenizer.get_vocab_size() == args.vocab, tokenizer.get_vocab_size()
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.normal(size=(args.batch, 3, 224, 224)).astype(np.float32))
  common = {"batch": args.batch, "beam": args.beam, "max_len": args.max_len,
            "with_encoder": True, "vocab_size": args.vocab + 1, "image_size": 224,
            "resnet_depth": 18 if args.small else 101,
            "d_model": r2gen_args.d_model, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count()}
  times, cpu = [], []
  with torch.no_grad(), harness.cpu_only():
    for _ in range(args.repeats):
      start, start_cpu = time.perf_counter(), time.process_time()
      seq = model(images, mode="sample")
      times.append(time.perf_counter() - start)
      cpu.append(time.process_time() - start_cpu)
  assert seq.shape == (args.batch, args.max_len)
  r2gen_s = min(times)
  r2gen_line = {"impl": "r2gen_torch", **common, "seconds": round(r2gen_s, 2),
                "cpu_seconds": round(min(cpu), 2),
                "reports_per_sec": round(args.batch / r2gen_s, 4),
                "tokens_per_sec": round(args.batch * args.max_len / r2gen_s, 2)}
  print(json.dumps(r2gen_line), flush=True)

  from cnx2rg_jax import bench  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.convert import r2gen as conv  # pylint: disable=import-outside-toplevel
  from configs import bench_decode  # pylint: disable=import-outside-toplevel
  ckpt = os.path.join(tmp, "model_best.pth")
  harness.save_trainer_checkpoint(model, ckpt)
  workdir = os.path.join(tmp, "workdir")
  conv.convert(ckpt, ann, "mimic_cxr", 3, workdir, num_heads=r2gen_args.num_heads,
               rm_num_heads=r2gen_args.rm_num_heads)
  import jax  # pylint: disable=import-outside-toplevel
  config = bench_decode.get_config()
  config.bench.workdir = workdir  # --mode=bench_decode's loading of a converted run
  ours_model, variables, crop = bench._workdir_model(config, workdir)  # pylint: disable=protected-access
  assert ours_model.config.r2gen_beam_search
  fn = bench._decode_fn(ours_model, impl="cached", beam_size=args.beam,  # pylint: disable=protected-access
                        max_len=args.max_len, with_encoder=True)
  inputs = jax.numpy.asarray(rng.normal(size=(args.batch, crop, crop, 1)), jax.numpy.float32)
  jax.block_until_ready(fn(variables, inputs))  # compile
  times, cpu = [], []
  for _ in range(args.ours_repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(variables, inputs))
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  ours_s = min(times)
  ours_line = {"impl": "cnx2rg_jax_cached", **common, "seconds": round(ours_s, 2),
               "cpu_seconds": round(min(cpu), 2),
               "reports_per_sec": round(args.batch / ours_s, 4),
               "tokens_per_sec": round(args.batch * args.max_len / ours_s, 2),
               "device": jax.devices()[0].device_kind}
  print(json.dumps(ours_line), flush=True)
  print(json.dumps({"speedup_wall": round(r2gen_s / ours_s, 1),
                    "speedup_cpu": round(r2gen_line["cpu_seconds"] /
                                         max(ours_line["cpu_seconds"], 1e-9), 1),
                    "batch": args.batch, "beam": args.beam, "max_len": args.max_len}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
