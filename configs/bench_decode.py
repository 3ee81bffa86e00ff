"""`python launch.py --config=configs/bench_decode.py --mode=bench_decode`: decode throughput of
the cached beam search against the naive re-decode, at the paper's dimensions, random weights.
"""

import ml_collections

from configs import cnx2rg


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = cnx2rg.get_config("paper")  # the paper's dims; no data is read
  c.variant = variant or "bench_decode"
  c.bench.vocab_size = 2000  # a CN-CXR-sized word vocabulary (the synthetic set has ~140)
  c.bench.batches = (1, 16)
  c.bench.max_lens = (60, 100)
  c.bench.beam_size = 3
  c.bench.with_encoder = (False, True)  # False: from precomputed ResNet features
  c.bench.impls = ("cached", "naive")
  c.bench.repeats = 2  # timed calls per setting, after one compiling call
  c.bench.naive_repeats = 1  # the naive re-decode is slow on a CPU
  # A run's workdir (e.g. from python -m cnx2rg_jax.convert.r2gen): decode with its model,
  # weights and vocabulary instead of random ones at the dims above ("" = random).
  c.bench.workdir = ""
  if variant == "quick":  # a smoke run: small dims
    c.model.resnet_depth = 18
    c.model.d_model = c.model.d_ff = c.model.rm_d_model = 64
    c.bench.batches, c.bench.max_lens, c.bench.with_encoder = (2,), (20,), (False, True)
    c.data.crop_size = 64
  elif variant == "gpu":  # scripts/gpu_bench.sh: the cached search in bfloat16, large batches
    c.model.dtype = "bfloat16"
    c.bench.batches, c.bench.max_lens, c.bench.with_encoder = (16, 64, 256), (100,), (True,)
    c.bench.impls, c.bench.repeats = ("cached",), 3
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/bench_decode.py; use '', 'quick' "
                     "or 'gpu'")
  return c
