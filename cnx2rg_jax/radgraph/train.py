"""Training and evaluation of the CN-RadGraph extractor (`--config=configs/cn_radgraph.py`).

    python launch.py --config=configs/cn_radgraph.py --workdir=DIR              # train
    python launch.py --config=configs/cn_radgraph.py --workdir=DIR --mode=eval  # --split=test

Training reads the annotations (`data.source`: the synthetic CN-CXR's graphs, or a JSON file in
the format of `radgraph.annotations`), builds the character vocabulary from the train split,
and minimises tag cross-entropy plus `train.relation_weight` times pair cross-entropy (pairs of
gold entities) with AdamW under warmup + cosine decay. Every `train.eval_every` steps and at the
end it extracts graphs from the whole val reports and scores them (`radgraph.metrics`); the
parameters with the best val relation F1 (ties: entity F1) are saved to DIR/model.
Same config and seed give the same model on CPU.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.radgraph import annotation_writer, annotations, features, metrics
from cnx2rg_jax.radgraph import extractor as extractor_lib
from cnx2rg_jax.radgraph.model import CNRadGraph, RadGraphConfig


class RadGraphRunError(UserError):
  """A config or workdir problem, shown to the user as one paragraph."""


def load_reports(data) -> dict[str, list[annotations.AnnotatedReport]]:
  """The annotated reports of `data` (config section), by split."""
  if data.source == "synthetic":
    reports = annotation_writer.synthetic_reports(data.num_examples, data.synthetic_seed)
  elif data.source == "file":
    if not data.annotations:
      raise RadGraphRunError("data.source='file' needs data.annotations=PATH, a JSON file in "
                             "the format of cnx2rg_jax/radgraph/annotations.py")
    reports = annotations.with_splits(annotations.read_annotations(data.annotations),
                                      data.split_seed)
  else:
    raise RadGraphRunError(f"data.source={data.source!r}; use 'synthetic' or 'file'")
  return {s: [r for r in reports if r.split == s] for s in annotations.SPLITS}


def model_config(section, vocab_size: int) -> RadGraphConfig:
  try:
    return RadGraphConfig(vocab_size=vocab_size, **section.to_dict())
  except (TypeError, ValueError) as e:
    raise RadGraphRunError(f"bad model section of the config: {e}") from None


def evaluate(extractor: extractor_lib.Extractor,
             reports: list[annotations.AnnotatedReport]) -> dict:
  """graph_scores of the extractor's graphs of whole reports against their annotations."""
  predicted = extractor.extract([r.text for r in reports])
  return metrics.graph_scores(predicted, [annotations.graph_of(r) for r in reports])


def _loss_fn(model: CNRadGraph, relation_weight: float):
  def loss(params, batch, rng):
    tag_logits, rel_logits = model.apply(
        {"params": params}, batch["chars"], batch["starts"], batch["ends"], batch["labels"],
        batch["entity_mask"], deterministic=False, rngs={"dropout": rng})
    char_mask = batch["chars"] > 0
    tag_ce = optax.softmax_cross_entropy_with_integer_labels(tag_logits, batch["tags"])
    tag_loss = jnp.sum(tag_ce * char_mask) / jnp.maximum(char_mask.sum(), 1)
    em = batch["entity_mask"]
    eye = jnp.eye(em.shape[1], dtype=bool)[None]
    pair_mask = em[:, :, None] & em[:, None, :] & ~eye
    rel_ce = optax.softmax_cross_entropy_with_integer_labels(rel_logits, batch["relations"])
    rel_loss = jnp.sum(rel_ce * pair_mask) / jnp.maximum(pair_mask.sum(), 1)
    return tag_loss + relation_weight * rel_loss, (tag_loss, rel_loss)
  return loss


def _optimizer(tr) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, tr.learning_rate, min(tr.warmup_steps, max(tr.num_steps - 1, 1)),
      max(tr.num_steps, 2), end_value=tr.learning_rate * tr.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(tr.clip_norm),
                     optax.adamw(schedule, weight_decay=tr.weight_decay)), schedule


def epoch_batches(buckets: np.ndarray, batch_size: int, rng: np.random.Generator
                  ) -> list[tuple[int, np.ndarray]]:
  """One epoch of (bucket length, window indices) batches, every window at least once.

  Windows are grouped by bucket and shuffled within it; a bucket's last, partial batch is filled
  up with windows from the start of the same bucket's order; the batches are then shuffled.
  """
  out = []
  for length in np.unique(buckets):
    members = rng.permutation(np.flatnonzero(buckets == length))
    n = -(-len(members) // batch_size) * batch_size
    members = np.resize(members, n)  # repeats from the start
    out += [(int(length), members[i:i + batch_size]) for i in range(0, n, batch_size)]
  return [out[i] for i in rng.permutation(len(out))]


def _better(new: dict, best: dict | None) -> bool:
  key = lambda m: (m["relation_f1"] or 0.0, m["entity_f1"] or 0.0)
  return best is None or key(new) > key(best)


def train(config, workdir: str, log=print) -> dict:
  """Trains, saves the best model to workdir/model, and returns its val metrics."""
  if extractor_lib.has_model(workdir):
    raise RadGraphRunError(
        f"{workdir} already holds a trained CN-RadGraph ({workdir}/{extractor_lib.MODEL_DIR}). "
        "Use another --workdir, delete that folder to train again, or evaluate it with "
        "--mode=eval")
  tr, mc = config.train, config.model
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
  splits = load_reports(config.data)
  for s in ("train", "val"):
    if not splits[s]:
      raise RadGraphRunError(f"the annotations have no {s!r} reports; training needs train "
                             "and val (give data_split per report, or none to split 7:1:2)")
  vocab = features.CharVocab.build(r.text for r in splits["train"])
  cfg = model_config(mc, vocab.size)
  items, lost = [], 0
  for r in splits["train"]:
    ents, rels = annotations.graph_of(r)
    try:
      got, n_lost = features.training_windows(r.text, ents, rels, cfg.max_chars, cfg.max_entities)
    except ValueError as e:
      raise RadGraphRunError(f"report {r.id}: {e}") from None
    items += got
    lost += n_lost
  data = features.encode_windows(items, vocab, cfg.max_chars, cfg.max_entities)
  if len(data) < tr.batch_size:
    raise RadGraphRunError(f"{len(data)} training windows, fewer than train.batch_size="
                           f"{tr.batch_size}; lower the batch size")
  log(f"CN-RadGraph: {len(splits['train'])} train reports -> {len(data)} windows "
      f"({lost} relations across windows dropped), {len(splits['val'])} val reports, "
      f"{vocab.size} characters")

  model = CNRadGraph(cfg)
  key = jax.random.PRNGKey(config.seed)
  init_key, dropout_key = jax.random.split(key)
  dummy = data.take(slice(0, 1))
  params = jax.jit(model.init)(init_key, dummy.chars, dummy.starts, dummy.ends, dummy.labels,
                      dummy.entity_mask)["params"]
  tx, schedule = _optimizer(tr)
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  loss_fn = _loss_fn(model, tr.relation_weight)

  @jax.jit
  def step_fn(state, batch, step):
    rng = jax.random.fold_in(dropout_key, step)
    (loss, (tag_loss, rel_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, rng)
    return state.apply_gradients(grads=grads), jnp.stack([loss, tag_loss, rel_loss])

  buckets = np.array([features.bucket_length(n, cfg.max_chars, cfg.bucket_step)
                      for n in data.lengths()])
  best, best_params, history = None, None, []
  t0, seen, losses, epoch, queue = time.perf_counter(), 0, [], 0, []
  for step in range(tr.num_steps):
    if not queue:
      queue = epoch_batches(buckets, tr.batch_size, np.random.default_rng([config.seed, epoch]))
      epoch += 1
    length, idx = queue.pop()
    state, loss = step_fn(state, data.take(idx).cut(length).as_dict(), step)
    losses.append(loss)
    seen += len(idx)
    last = step + 1 == tr.num_steps
    if (step + 1) % tr.eval_every == 0 or last:
      mean_loss = np.mean(np.asarray(jax.device_get(losses)), axis=0)
      losses = []
      ex = extractor_lib.Extractor(cfg, state.params, vocab, config.eval.batch_size)
      scores = evaluate(ex, splits["val"])
      elapsed = time.perf_counter() - t0
      history.append({"step": step + 1, "loss": float(mean_loss[0]),
                      "entity_f1": scores["entity_f1"], "relation_f1": scores["relation_f1"],
                      "seconds": round(elapsed, 1)})
      log(f"step {step + 1}/{tr.num_steps}  loss {mean_loss[0]:.4f} (tags {mean_loss[1]:.4f}, "
          f"pairs {mean_loss[2]:.4f})  lr {float(schedule(step)):.2e}  "
          f"{seen / elapsed:.0f} windows/s  | val entity F1 {scores['entity_f1']:.4f}  "
          f"relation F1 {scores['relation_f1']:.4f}")
      if _better(scores, best):
        best, best_params = {**scores, "step": step + 1}, jax.device_get(state.params)
  result = {k: v for k, v in best.items() if k != "per_label"}
  result["train_seconds"] = round(time.perf_counter() - t0, 1)
  extractor_lib.save(workdir, cfg, best_params, vocab,
                     {"val": result, "history": history})
  return result


def eval_split(config, workdir: str, split: str) -> dict:
  """Scores the saved model on `split` and writes DIR/eval/cn_radgraph_<split>_metrics.json."""
  if split not in annotations.SPLITS:
    raise RadGraphRunError(f"--split={split!r}; use one of {', '.join(annotations.SPLITS)}")
  reports = load_reports(config.data)[split]
  if not reports:
    raise RadGraphRunError(f"the annotations have no {split!r} reports")
  scores = evaluate(extractor_lib.load(workdir, config.eval.batch_size), reports)
  scores["split"] = split
  out = pathlib.Path(workdir) / "eval" / f"cn_radgraph_{split}_metrics.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(scores, indent=1))
  return scores
