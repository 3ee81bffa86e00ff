"""`--mode=bench_train`: training examples/s of the demo and the paper dimensions on this machine.

Each configuration is timed on the real jitted, sharded train step (`training.steps`) with random
weights and random batches of its own shapes (crop, max_tokens, a CN-CXR-sized vocabulary), after
one compiling step and `bench.train_warmup` warm-up steps. Prints one JSON line:

    {"device": ..., "platform": ..., "num_devices": N,
     "results": [{"config": "demo" | "paper", "batch": B, "examples_per_sec": X, ...}],
     "paper_state_memory_per_device": {"devices": n, "strategies": [{"strategy", "mesh",
         "params_mib", "opt_state_mib", "state_mib", "replicated_fraction"}, ...]}}

Each result also has the analytic training FLOPs of an example (models/flops.py), the model
FLOP/s they give, the MFU against the chip's dense peak for model.dtype (None when the chip is
not in PEAK_FLOPS and bench.peak_tflops is 0), and the first device's peak memory (None on a CPU).
`bench.train_batch_sizes` times several global batch sizes (empty: train.batch_size).

The memory entry is the paper model's train state per device under each sharding strategy, on
this machine's devices, or on `bench.memory_devices` when it has one (training.memory_plan).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import jax
import numpy as np

from cnx2rg_jax import errors, sharding
from cnx2rg_jax.models import factory, flops
from cnx2rg_jax.training import memory_plan, optimizer, state as state_lib, steps

BENCH_CONFIGS = ("demo", "paper", "cmn_demo", "cmn")  # configs/cnx2rg.py variants (cmn: R2GenCMN)
# Dense peak FLOP/s per chip, (bfloat16, float32 matmuls as TF32), from the vendors' sheets (SXM
# parts); MFU is reported against the one of the run's model.dtype. bench.peak_tflops overrides.
PEAK_FLOPS = {"H100": (989.4e12, 494.7e12), "H200": (989.4e12, 494.7e12),
              "A100": (312e12, 156e12)}


def peak_flops(device_kind: str, dtype: str, override_tflops: float = 0.0):
  """The chip's dense peak for `dtype` ("bfloat16" | "float32"), or None when unknown."""
  if override_tflops:
    return override_tflops * 1e12
  for name, (bf16, f32) in PEAK_FLOPS.items():
    if name in device_kind:
      return bf16 if dtype == "bfloat16" else f32
  return None


def _sig(x: float) -> float:
  return float(f"{x:.4g}")  # 4 significant digits


def peak_memory_mib():
  """The first device's peak allocated memory (MiB), where the backend reports it (GPU/TPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else round(peak / 2 ** 20, 1)


def _dims(name: str, base, get_config: Callable):
  """The config whose dims `name` names (`get_config`: configs/cnx2rg.py's, variant -> config);
  the mesh, bench keys and model.dtype of `base` carry over."""
  c = get_config("" if name == "demo" else name)
  c.mesh, c.bench, c.seed = base.mesh, base.bench, base.seed
  c.model.dtype = base.model.dtype
  return c


def _random_batch(rng: np.random.Generator, image_shape: tuple, tokens: int, vocab: int):
  batch = image_shape[0]
  return {"image": rng.normal(size=image_shape).astype(np.float32),
          "report_tokens": rng.integers(4, vocab, size=(batch, tokens)).astype(np.int32),
          "report_mask": np.ones((batch, tokens), np.int32),
          "keyword_labels": rng.integers(-1, 2, size=(batch, 48)).astype(np.int8),
          "has_keyword_labels": np.ones((batch,), bool)}


def time_config(config, vocab_size: int, num_steps: int, warmup: int,
                batch_size: int = 0) -> dict:
  """Steps/s of config's train step; returns one `results` entry (config name filled later)."""
  mesh = sharding.mesh_from_config(config.mesh)
  batch_size, crop = batch_size or config.train.batch_size, config.data.crop_size
  tokens = config.data.max_tokens
  model = factory.build_model(config, vocab_size)
  tx, schedules = optimizer.make_optimizer(config.train, steps_per_epoch=100)
  start = time.perf_counter()
  state, shardings = state_lib.create_state(model, tx, mesh, image_size=crop,
                                            num_tokens=tokens - 1, seed=config.seed,
                                            strategy=config.mesh.strategy)
  shapes = {"image": model.config.image_shape(batch_size, crop),
            "report_tokens": (batch_size, tokens),
            "report_mask": (batch_size, tokens), "keyword_labels": (batch_size, 48),
            "has_keyword_labels": (batch_size,)}
  step = steps.make_train_step(model, tx, mesh, shardings, shapes,
                               keyword_weight=max(config.train.keyword_weight, 0.1),
                               dropout_seed=config.seed, lr_fn=schedules["rest"])
  rng = np.random.default_rng(config.seed)
  batches = [sharding.global_batch(_random_batch(rng, shapes["image"], tokens, vocab_size), mesh)
             for _ in range(2)]
  state, metrics = step(state, batches[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for i in range(warmup):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(num_steps):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / num_steps
  if not bool(metrics["finite"]):
    raise RuntimeError("the benchmark's loss became NaN/Inf; its timings would mean nothing")
  params = sum(x.size for x in jax.tree.leaves(state.params))
  per_example = flops.train_flops_per_example(model.config, crop, tokens - 1)
  achieved = per_example * batch_size / seconds
  peak = peak_flops(jax.devices()[0].device_kind, config.model.dtype, config.bench.peak_tflops)
  return {"batch": batch_size, "examples_per_sec": round(batch_size / seconds, 3),
          "dtype": config.model.dtype, "train_gflops_per_example": _sig(per_example / 1e9),
          "model_tflops_per_sec": _sig(achieved / 1e12),
          "mfu": None if peak is None else round(achieved / (peak * jax.device_count()), 4),
          "peak_memory_mib": peak_memory_mib(),
          "step_seconds": round(seconds, 4), "compile_seconds": round(compile_s, 1),
          "timed_steps": num_steps, "parameters": int(params), "image_size": crop,
          "max_tokens": tokens, "resnet_depth": config.model.resnet_depth,
          "resnet_width": config.model.resnet_width, "d_model": config.model.d_model}


def bench_train(config, get_config: Callable) -> dict:
  """The JSON object of the module docstring; `get_config` (variant -> config) gives the dims of
  bench.train_configs' variants of configs/cnx2rg.py (run.py loads it from that file)."""
  b = config.bench
  unknown = set(b.train_configs) - set(BENCH_CONFIGS)
  if unknown:
    raise errors.ConfigError(
        f"bench.train_configs has {sorted(unknown)}; choose from {BENCH_CONFIGS}, as a tuple: "
        "--config.bench.train_configs=\"('paper',)\"")
  results = []
  for name in b.train_configs:
    for batch in b.train_batch_sizes or (0,):
      dims = _dims(name, config, get_config)
      entry = {"config": name, **time_config(dims, b.train_vocab_size, b.train_steps,
                                             b.train_warmup, batch)}
      print(entry, file=sys.stderr, flush=True)  # progress; stdout is the JSON line
      results.append(entry)
  dev = jax.devices()[0]
  n = jax.device_count() if jax.device_count() > 1 else b.memory_devices
  paper = _dims("paper", config, get_config)
  memory = memory_plan.strategy_memory(paper, b.train_vocab_size, n)
  return {"device": dev.device_kind, "platform": dev.platform, "num_devices": jax.device_count(),
          "results": results,
          "paper_state_memory_per_device": {"devices": n, "strategies": memory}}
