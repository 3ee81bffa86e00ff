"""What length-bucketed batches save on the synthetic set's real report lengths.

    python -m cnx2rg_jax.bench.length_buckets [--config=demo|paper] [--steps=2] [--batches=2000]
        [--config_file=configs/cnx2rg.py]

Reads the synthetic train split's reports through the run's word tokenizer, draws `--batches`
random training batches of train.batch_size, and counts which bucket length
(training/length_buckets.py, train.length_buckets) each would be cut to. Then it times the
config's real jitted train step (bench/train.py, random weights) at each used length and
at the full data.max_tokens, and prints one JSON line with the bucket shares, the step times and
the expected speed-up (full-length step time over the share-weighted bucketed one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile

import numpy as np

from cnx2rg_jax import config_files
from cnx2rg_jax.bench import train as bench_train
from cnx2rg_jax.data import dataset, vocabulary
from cnx2rg_jax.training import length_buckets


def bucket_shares(config, num_batches: int, seed: int = 0) -> dict[int, float]:
  """{bucket length: share of random training batches cut to it} on the synthetic set."""
  with tempfile.TemporaryDirectory(prefix="cnx2rg_lengths_") as tmp:
    data = config.data
    with data.unlocked():
      data.name, data.data_dir, data.build_workers = "synthetic", tmp, 0
    with contextlib.redirect_stdout(sys.stderr):
      prepared = dataset.prepare(data)
    texts = dataset.read_split_texts(prepared, "train")
    tok = vocabulary.tokenizer_for_run(config.text, prepared, None, texts)
  needed = np.minimum([len(tok.encode(r)) + 2 for r in texts.reports], data.max_tokens)
  buckets = length_buckets.bucket_lengths(data.max_tokens, config.train.length_buckets)
  rng = np.random.default_rng(seed)
  bs = config.train.batch_size
  picks = [length_buckets.choose(buckets, int(needed[rng.choice(len(needed), bs, False)].max()))
           for _ in range(num_batches)]
  values, counts = np.unique(picks, return_counts=True)
  return {int(v): float(c) / num_batches for v, c in zip(values, counts)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="paper", choices=("demo", "paper"))
  p.add_argument("--config_file", default="configs/cnx2rg.py",
                 help="the config file whose --config variant is measured")
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--batches", type=int, default=2000)
  args = p.parse_args(argv)
  config = config_files.load(f"{args.config_file}:{'' if args.config == 'demo' else args.config}")
  shares = bucket_shares(config, args.batches)
  full = config.data.max_tokens
  seconds = {}
  for length in sorted(set(shares) | {full}):
    with config.data.unlocked():
      config.data.max_tokens = length
    r = bench_train.time_config(config, config.bench.train_vocab_size, args.steps,
                                config.bench.train_warmup)
    seconds[length] = r["step_seconds"]
    print({"tokens": length, **r}, file=sys.stderr, flush=True)
  bucketed = sum(share * seconds[length] for length, share in shares.items())
  print(json.dumps({"config": args.config, "max_tokens": full, "batch": config.train.batch_size,
                    "buckets": list(length_buckets.bucket_lengths(
                        full, config.train.length_buckets)),
                    "bucket_shares": shares, "step_seconds": seconds,
                    "expected_step_seconds_bucketed": round(bucketed, 4),
                    "speedup": round(seconds[full] / bucketed, 3)}))


if __name__ == "__main__":
  main()
