"""The training loop of `launch.py --mode=train`: data, sharded state, steps, checkpoints, logs.

    prepare data + tokenizer -> mesh -> state (restored from DIR/checkpoints if there is one,
    else created into its shardings) -> repeat: global batch -> jitted step -> every
    train.log_every steps a progress line and TensorBoard scalars, checking for NaN/Inf ->
    every train.checkpoint_every steps and at the end an async checkpoint (train state + grain
    iterator state) -> every train.eval_every steps beam search on val, its metrics logged and
    saved with a checkpoint of that step (the best by val BLEU-4 is kept for evaluation; the val
    evaluation is handed in, `inference.evaluate.make_validator`)

A run started again in the same workdir resumes from the latest checkpoint and, on CPU, continues
bit-identically (tests/test_training_loop.py). A NaN or Inf loss stops the run with an error
naming the first bad step; nothing after the last good checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Optional

import jax

from cnx2rg_jax import distributed, errors, sharding
from cnx2rg_jax.data import dataset, pipeline, vocabulary
from cnx2rg_jax.models import factory, prompt_encoder
from cnx2rg_jax.training import checkpoints as ckpt_lib
from cnx2rg_jax.training import metrics_io, optimizer
from cnx2rg_jax.training import length_buckets, state as state_lib, steps


class NonFiniteLossError(errors.UserError, RuntimeError):
  """The loss or a gradient became NaN/Inf; the message names the step and what to change."""


@dataclasses.dataclass
class TrainResult:
  step: int
  state: state_lib.TrainState
  last_metrics: dict
  # (step, metrics) of every log line of this call: means over train.log_every steps
  history: list = dataclasses.field(default_factory=list)


def _global_batch_size(tr) -> tuple[int, int]:
  """(global, per-process) batch sizes; the global one must split evenly over processes."""
  n = jax.process_count()
  if tr.batch_size % n:
    raise errors.ConfigError(f"train.batch_size={tr.batch_size} does not split over {n} "
                             "processes; make it a multiple of the process count")
  return tr.batch_size, tr.batch_size // n


# (config, model, mesh, prepared, tokenizer, writer, log) -> the function (step, state) -> val
# metrics that runs every train.eval_every steps: inference.evaluate.make_validator.
MakeValidator = Callable[..., Callable[[int, Any], dict]]


def train(config, workdir: str, log: Callable[[str], None] = print,
          make_validator: Optional[MakeValidator] = None,
          make_annotator: Optional[Callable[[str], Any]] = None) -> TrainResult:
  """Trains (or resumes) the run in `workdir` up to train.num_steps. `make_validator` builds the
  val evaluation of every train.eval_every steps (run.py passes
  `inference.evaluate.make_validator`); without one, train.eval_every must be 0.
  `make_annotator` (run.py passes `radgraph.annotator.make`) is what a first build with
  data.annotate='cn_radgraph' annotates with (dataset.prepare)."""
  tr = config.train
  if tr.eval_every and make_validator is None:
    raise ValueError(f"train.eval_every={tr.eval_every} needs make_validator (e.g. "
                     "inference.evaluate.make_validator) to run beam search on val; pass one, "
                     "or set train.eval_every=0")
  workdir_path = pathlib.Path(workdir)
  prepared = dataset.prepare(config.data, dataset.num_views(config),
                             make_annotator=make_annotator)
  log(f"dataset cncxr/{prepared.builder.builder_config.name}: "
      f"{dataset.annotation_summary(prepared)}")
  train_texts = dataset.read_split_texts(prepared, "train")
  if tr.keyword_weight > 0 and not train_texts.has_keyword_labels.any():
    raise errors.ConfigError(
        f"train.keyword_weight={tr.keyword_weight} trains the keyword head, but no training "
        f"report of this build has keyword labels (data.annotate={config.data.annotate!r}, "
        f"data.language={config.data.language!r}). Label a Chinese release at build time "
        "(data.annotate='labeler' or 'cn_radgraph'), give 'keywords' in the annotation, or set "
        "train.keyword_weight=0")
  tok = vocabulary.tokenizer_for_run(config.text, prepared, workdir, train_texts)
  mesh = sharding.mesh_from_config(config.mesh)
  global_bs, local_bs = _global_batch_size(tr)
  if global_bs % mesh.shape[sharding.DATA_AXIS]:
    raise errors.ConfigError(
        f"train.batch_size={global_bs} does not split over the mesh's "
        f"{mesh.shape[sharding.DATA_AXIS]} data shards; make it a multiple of that, or change "
        "mesh.shape")
  steps_per_epoch = pipeline.steps_per_epoch(config.data, train_texts, config.seed, global_bs)
  model = factory.build_model(config, tok.vocab_size)
  prompts = prompt_encoder.describe_prompts(model.config)
  if prompts:
    log(prompts)
  tx, schedules = optimizer.make_optimizer(tr, steps_per_epoch)
  image, num_tokens = config.data.crop_size, config.data.max_tokens - 1
  abstract, shardings, init_state = state_lib.abstract_state(
      model, tx, mesh, image_size=image, num_tokens=num_tokens, strategy=config.mesh.strategy)
  sharding.check_replication(abstract.params, shardings.params, mesh, config.mesh.strategy,
                             config.mesh.max_replicated_fraction)
  ckpts = ckpt_lib.Checkpoints(str(workdir_path / "checkpoints"), keep_last=tr.keep_last,
                               keep_best=tr.keep_best)
  start = ckpts.latest_step()
  # The saved input position is restored where this topology wrote one; otherwise (a run
  # resumed on another number of processes) the pipeline starts at the step, which names the
  # same global batch in every topology (pipeline.train_dataset).
  seek = start is not None and not ckpts.has_data_state(start)
  ds = pipeline.train_dataset(prepared, config.data, tok, batch_size=local_bs, seed=config.seed,
                              shard=pipeline.ProcessShard.from_jax(), split_texts=train_texts,
                              start_step=start if seek else 0)
  data_iter = iter(ds)
  if start is not None:
    state = ckpts.restore(start, abstract, None if seek else data_iter)
    log(f"resumed from step {start} ({workdir_path / 'checkpoints'})"
        + ("; its input position was saved by another number of processes, so the input "
           "restarts at the global batch of that step" if seek else ""))
  else:
    start = 0
    state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(config.seed))
  shapes = {"image": (global_bs, image, image, 1), "report_tokens": (global_bs, num_tokens + 1),
            "report_mask": (global_bs, num_tokens + 1), "keyword_labels": (global_bs, 48),
            "has_keyword_labels": (global_bs,)}
  buckets = length_buckets.bucket_lengths(config.data.max_tokens, tr.length_buckets)
  step_fns: dict[int, Callable] = {}  # one compiled step per token length

  def step_fn_for(length: int, state, batch) -> Callable:
    if length not in step_fns:
      cut_shapes = {**shapes, **{k: (global_bs, length) for k in length_buckets.TOKEN_KEYS}}
      fn = steps.make_train_step(model, tx, mesh, shardings, cut_shapes,
                                 keyword_weight=tr.keyword_weight, dropout_seed=config.seed + 1,
                                 lr_fn=schedules["rest"])
      step_fns[length] = distributed.compiled_together(fn, state, batch)
    return step_fns[length]

  writer = metrics_io.SummaryWriter(str(workdir_path / "events"),
                                    enabled=jax.process_index() == 0)
  validate = None
  if tr.eval_every:
    validate = make_validator(config, model, mesh, prepared, tok, writer, log)
  progress = metrics_io.Progress(tr.num_steps, global_bs, start_step=start)
  pending: list[tuple[int, dict]] = []
  last: dict = {}
  history: list[tuple[int, dict]] = []
  try:
    for step in range(start, tr.num_steps):
      local = next(data_iter)
      length = length_buckets.agreed(length_buckets.choose(
          buckets, length_buckets.needed_length(local["report_mask"])))
      batch = sharding.global_batch(length_buckets.cut({k: local[k] for k in shapes}, length),
                                    mesh)
      state, metrics = step_fn_for(length, state, batch)(state, batch)
      pending.append((step + 1, metrics))
      done = step + 1
      if done % tr.log_every == 0 or done == tr.num_steps:
        last = _flush(pending, writer, progress, log)
        history.append((done, last))
        pending = []
      evaluate_now = validate is not None and (done % tr.eval_every == 0
                                               or done == tr.num_steps)
      if evaluate_now or done == tr.num_steps or (tr.checkpoint_every
                                                  and done % tr.checkpoint_every == 0):
        if pending:  # never save a state that has not been checked for NaN/Inf
          last = _flush(pending, writer, progress, log)
          history.append((done, last))
          pending = []
        val = validate(done, state) if evaluate_now else None
        ckpts.save(done, state, data_iter, metrics=val)
  finally:
    ckpts.close()
    writer.close()
  return TrainResult(step=tr.num_steps, state=state, last_metrics=last, history=history)


def _flush(pending, writer, progress, log) -> dict:
  """Checks the metrics of the steps since the last flush for NaN/Inf, then logs their means
  (clu's TrainMetrics: averages, the last learning rate); returns those means."""
  host = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, host):
    if not m["finite"]:
      raise NonFiniteLossError(
          f"the loss or a gradient is NaN/Inf at step {step} (loss {float(m['loss'])}); "
          "training stopped and nothing after the last checkpoint was saved. Lower the "
          "learning rate or check the data, then run again to resume from that checkpoint")
  acc = None
  for m in host:
    update = metrics_io.TrainMetrics.single_from_model_output(
        **{k: v for k, v in m.items() if k != "finite"})
    acc = update if acc is None else acc.merge(update)
  values = metrics_io.compute_floats(acc)
  step = pending[-1][0]
  writer.scalars(step, {"train/" + k: v for k, v in values.items()})
  log(progress.line(step, values["loss"], values["learning_rate"]))
  return values
