"""`--mode=bench_input`: time the training input pipeline of the dataset the config names (and,
for the synthetic set, a fresh build of it)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time

from cnx2rg_jax.data import dataset, pipeline, vocabulary


def bench_input(config) -> dict:
  """Times training batches of the dataset `config.data` names, as training reads them.

  The synthetic set is built into a fresh folder first (the build is timed too); a release
  (data.name='release', data.manual_dir) is built where data.data_dir says, or reused, and its
  stored image side (data.stored_image_size) is what the pipeline decodes. The figure counts
  examples delivered by the iterator after `bench.input_warmup` batches (worker start-up
  excluded), at `train.batch_size` with `data.num_workers` processes, oversampling and the
  other training transforms as configured.
  """
  data = config.data
  with contextlib.ExitStack() as stack:
    if data.name == "synthetic":
      tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnx2rg_bench_"))
      with data.unlocked():
        data.data_dir = tmp
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is the JSON line
      prepared = dataset.prepare(data, dataset.num_views(config))
    texts = dataset.read_split_texts(prepared, "train")
    tokenizer = vocabulary.tokenizer_for_run(config.text, prepared, workdir=None,
                                             train_texts=texts)
    ds = pipeline.train_dataset(prepared, data, tokenizer, batch_size=config.train.batch_size,
                                seed=config.seed, shard=pipeline.ProcessShard(0, 1),
                                split_texts=texts)
    it = iter(ds)
    for _ in range(config.bench.input_warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(config.bench.input_batches):
      batch = next(it)
    seconds = time.perf_counter() - start
    it.close()  # stop the worker processes before a temporary build folder goes
  cfg = prepared.builder.builder_config
  return {
      "dataset": f"cncxr/{cfg.name}",
      "examples_per_sec": round(config.bench.input_batches * config.train.batch_size / seconds, 1),
      "batch_size": config.train.batch_size,
      "workers": data.num_workers,
      "crop_size": int(batch["image"].shape[-2]),
      "stored_image_size": cfg.image_size,
      "train_examples": prepared.num_examples("train"),
      "built_now": prepared.built_now,
      "build_seconds": round(prepared.build_seconds, 2),
  }
