"""The training loop of `launch.py --mode=train`: data, sharded state, steps, checkpoints, logs.

    prepare data + tokenizer -> mesh -> state (restored from DIR/checkpoints if there is one,
    else created into its shardings) -> repeat: global batch -> jitted step -> every
    train.log_every steps a progress line and TensorBoard scalars, checking for NaN/Inf ->
    every train.checkpoint_every steps and at the end an async checkpoint (train state + grain
    iterator state)

A run started again in the same workdir resumes from the latest checkpoint and, on CPU, continues
bit-identically (tests/test_training_loop.py). A NaN or Inf loss stops the run with an error
naming the first bad step; nothing after the last good checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import jax
import numpy as np

from cnx2rg_jax import sharding
from cnx2rg_jax.data import dataset, pipeline, vocabulary
from cnx2rg_jax.models import factory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training import checkpoints as ckpt_lib
from cnx2rg_jax.training import metrics_io, optimizer, state as state_lib, steps


class NonFiniteLossError(RuntimeError):
  """The loss or a gradient became NaN/Inf; the message names the step."""


@dataclasses.dataclass
class TrainResult:
  step: int
  state: state_lib.TrainState
  last_metrics: dict


def _global_batch_size(tr) -> tuple[int, int]:
  """(global, per-process) batch sizes; the global one must split evenly over processes."""
  n = jax.process_count()
  if tr.batch_size % n:
    raise ValueError(f"train.batch_size={tr.batch_size} does not split over {n} processes")
  return tr.batch_size, tr.batch_size // n


def train(config, workdir: str, log: Callable[[str], None] = print) -> TrainResult:
  """Trains (or resumes) the run in `workdir` up to train.num_steps."""
  tr = config.train
  workdir_path = pathlib.Path(workdir)
  prepared = dataset.prepare(config.data)
  train_texts = dataset.read_split_texts(prepared, "train")
  tok = vocabulary.tokenizer_for_run(config.text, prepared, workdir, train_texts)
  mesh = sharding.mesh_from_config(config.mesh)
  global_bs, local_bs = _global_batch_size(tr)
  if global_bs % mesh.shape[sharding.DATA_AXIS]:
    raise ValueError(f"train.batch_size={global_bs} does not split over the mesh's "
                     f"{mesh.shape[sharding.DATA_AXIS]} data shards")
  steps_per_epoch = max(1, prepared.num_examples("train") // global_bs)
  mcfg = factory.model_config(config.model, vocab_size=tok.vocab_size,
                              max_len=config.data.max_tokens)
  model = CNX2RG(mcfg)
  tx, schedules = optimizer.make_optimizer(tr, steps_per_epoch)
  image, num_tokens = config.data.crop_size, config.data.max_tokens - 1
  abstract, shardings, init_state = state_lib.abstract_state(model, tx, mesh, image_size=image,
                                                             num_tokens=num_tokens)
  ds = pipeline.train_dataset(prepared, config.data, tok, batch_size=local_bs, seed=config.seed,
                              shard=pipeline.ProcessShard.from_jax(), split_texts=train_texts)
  data_iter = iter(ds)
  ckpts = ckpt_lib.Checkpoints(str(workdir_path / "checkpoints"), keep_last=tr.keep_last,
                               keep_best=tr.keep_best)
  start = ckpts.latest_step()
  if start is not None:
    state = ckpts.restore(start, abstract, data_iter)
    log(f"resumed from step {start} ({workdir_path / 'checkpoints'})")
  else:
    start = 0
    state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(config.seed))
  shapes = {"image": (global_bs, image, image, 1), "report_tokens": (global_bs, num_tokens + 1),
            "report_mask": (global_bs, num_tokens + 1), "keyword_labels": (global_bs, 48)}
  step_fn = steps.make_train_step(model, tx, mesh, shardings, shapes,
                                  keyword_weight=tr.keyword_weight, dropout_seed=config.seed + 1,
                                  lr_fn=schedules["rest"])
  writer = metrics_io.SummaryWriter(str(workdir_path / "events"),
                                    enabled=jax.process_index() == 0)
  progress = metrics_io.Progress(tr.num_steps, global_bs, start_step=start)
  pending: list[tuple[int, dict]] = []
  last: dict = {}
  try:
    for step in range(start, tr.num_steps):
      local = next(data_iter)
      batch = sharding.global_batch({k: local[k] for k in shapes}, mesh)
      state, metrics = step_fn(state, batch)
      pending.append((step + 1, metrics))
      done = step + 1
      if done % tr.log_every == 0 or done == tr.num_steps:
        last = _flush(pending, writer, progress, log)
        pending = []
      if done == tr.num_steps or (tr.checkpoint_every and done % tr.checkpoint_every == 0):
        if pending:  # never save a state that has not been checked for NaN/Inf
          last = _flush(pending, writer, progress, log)
          pending = []
        ckpts.save(done, state, data_iter)
  finally:
    ckpts.close()
    writer.close()
  return TrainResult(step=tr.num_steps, state=state, last_metrics=last)


def _flush(pending, writer, progress, log) -> dict:
  """Checks and logs the metrics of the steps since the last flush; returns the last step's."""
  host = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, host):
    if not m["finite"]:
      raise NonFiniteLossError(
          f"the loss or a gradient is NaN/Inf at step {step} (loss {float(m['loss'])}); "
          "training stopped and nothing after the last checkpoint was saved. Lower the "
          "learning rate or check the data, then run again to resume from that checkpoint")
  step, values = pending[-1][0], {k: float(v) for k, v in host[-1].items()}
  mean_loss = float(np.mean([float(m["loss"]) for m in host]))
  writer.scalars(step, {"train/" + k: v for k, v in values.items() if k != "finite"})
  log(progress.line(step, mean_loss, values["learning_rate"]))
  return values
