"""`--mode=bench_input`: time a fresh synthetic build and the training input pipeline."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time

from cnx2rg_jax.data import dataset, pipeline, vocabulary


def bench_input(config) -> dict:
  """Builds the synthetic set into a fresh folder (timed), then times training batches.

  The pipeline figure counts examples delivered by the iterator after `bench.input_warmup`
  batches (worker start-up excluded), at `train.batch_size` with `data.num_workers` processes.
  """
  data = config.data
  with tempfile.TemporaryDirectory(prefix="cnx2rg_bench_") as tmp:
    with data.unlocked():
      data.name = "synthetic"
      data.data_dir = tmp
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is the JSON line
      prepared = dataset.prepare(data)
    tokenizer = vocabulary.tokenizer_for_run(config.text, prepared, workdir=None)
    ds = pipeline.train_dataset(prepared, data, tokenizer, batch_size=config.train.batch_size,
                                seed=config.seed, shard=pipeline.ProcessShard(0, 1))
    it = iter(ds)
    for _ in range(config.bench.input_warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(config.bench.input_batches):
      batch = next(it)
    seconds = time.perf_counter() - start
    it.close()  # stop the worker processes before the build folder goes
  return {
      "examples_per_sec": round(config.bench.input_batches * config.train.batch_size / seconds, 1),
      "batch_size": config.train.batch_size,
      "workers": data.num_workers,
      "crop_size": int(batch["image"].shape[1]),
      "build_examples": data.num_examples,
      "build_seconds": round(prepared.build_seconds, 2),
  }
