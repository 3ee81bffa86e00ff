"""Training checkpoints: the train state, the input iterator and the step, saved with Orbax.

`Checkpoints(directory)` wraps one `orbax.checkpoint.CheckpointManager`. Each checkpoint is the
folder `DIR/<step>/` with the items
  state/    the train state pytree (`StandardSave`; sharded global arrays are written by every
            host for its own shards)
  data/     the grain `DatasetIterator` state, one JSON file a process (grain's Orbax handler)
  metrics/  the ranking metrics, when the save was given a `best_metric` value
Saves are asynchronous: `save` returns once the arrays are copied off the devices, and the
files are written in the background (`wait` blocks until they are on disk).

Retention is one preservation policy: a checkpoint stays if it is among the `keep_last`
newest OR among the `keep_best` highest by `best_metric` (ties: the later step). A save
without that metric only counts as "last". Orbax writes into a temporary folder and renames
it when complete, so a save cut short is never seen as a step.

Restoring checks the saved shapes and dtypes against the requested ones first (Orbax would fit
arrays to the target without complaint) and turns every failure into a `CheckpointError`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from cnx2rg_jax.errors import CheckpointError  # noqa: F401  (also checkpoints.CheckpointError)

PyTree = Any

STATE = "state"
DATA = "data"

_FIX = "the workdir holds a run with a different model or config; use another --workdir"


class Checkpoints:
  """The checkpoints of one training run in `directory`: save, retain, resume, pick the best.

  Every process of a multi-host run makes one and calls the same methods in the same order;
  Orbax coordinates the writes.
  """

  def __init__(self, directory: str, *, keep_last: int = 2, keep_best: int = 1,
               best_metric: str = "bleu_4", async_save: bool = True):
    if keep_last < 1:
      raise ValueError(f"keep_last must be >= 1 (the newest checkpoint resumes), got {keep_last}")
    if keep_best < 0:
      raise ValueError(f"keep_best must be >= 0, got {keep_best}")
    directory = os.fspath(directory)
    if "://" not in directory:
      directory = os.path.abspath(directory)
    self.directory = directory
    self.best_metric = best_metric
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep_last),
        checkpoint_managers.BestN(get_metric_fn=self._score, reverse=False, n=keep_best,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=self._score,  # makes Orbax write and read the metrics; best_step ranks by it
        best_mode="max",
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler()})

  def _score(self, metrics: Optional[Mapping[str, Any]]) -> float:
    """The ranking value of saved metrics; -inf where `best_metric` is absent or NaN."""
    try:
      value = float(metrics[self.best_metric])
    except (KeyError, TypeError, ValueError):
      return -math.inf
    return -math.inf if math.isnan(value) else value

  def latest_step(self) -> Optional[int]:
    """The newest complete step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps present, oldest first."""
    return sorted(self._manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The kept step with the highest `best_metric`, or None when no step carries it."""
    step = self._manager.best_step()
    if step is None or self._score(self._manager.metrics(step)) == -math.inf:
      return None
    return step

  def has_data_state(self, step: int) -> bool:
    """Whether `step` holds the input position of this process in this topology (grain writes
    one file a process: a run with another process count has none to read)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return (epath.Path(self.directory) / str(step) / DATA / name).exists()

  def save(self, step: int, state: PyTree, data_iterator=None,
           metrics: Optional[dict] = None, force: bool = False) -> bool:
    """Starts saving `state` (and the iterator's position) as `step`; False if not saved.

    A step that already exists, or one not after the latest, is skipped. `metrics` are kept
    for ranking only when they hold a `best_metric` value; values must be scalars.
    """
    if step in self._manager.all_steps():
      return False
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      return self._manager.save(step, args=ocp.args.Composite(**items),
                                metrics=self._ranking_metrics(metrics), force=force)
    except ocp.checkpoint_manager.StepAlreadyExistsError:
      return False

  def _ranking_metrics(self, metrics: Optional[Mapping[str, Any]]) -> Optional[dict]:
    if not metrics or metrics.get(self.best_metric) is None:
      return None
    return {k: float(np.asarray(v)) for k, v in metrics.items() if v is not None}

  def restore(self, step: Optional[int], abstract_state: PyTree, data_iterator=None) -> PyTree:
    """The state saved at `step` (None: the latest), laid out as `abstract_state`.

    `abstract_state` leaves are `jax.ShapeDtypeStruct`s (their `sharding` places the restored
    arrays) or arrays (their own sharding). `data_iterator`, if given, is set in place to
    the saved position.
    """
    self._manager.wait_until_finished()
    if step is None:
      step = self._manager.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint exists in {self.directory}; train first, or point "
                              "--workdir at the run to resume or evaluate")
    elif step not in self._manager.all_steps():
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory} (steps there: "
                            f"{self.all_steps() or 'none'})")
    where = f"checkpoint step {step} in {self.directory}"
    try:
      metadata = self._manager.metadata(step)
      saved_items = set(metadata.item_handlers or ())
      saved_state = metadata.item_metadata[STATE]
    except Exception as e:  # orbax raises several types for missing or damaged files
      raise CheckpointError(f"{where} is damaged or incomplete ({_brief(e)}); delete "
                            f"{self._step_dir(step)} to resume from an earlier step, or use "
                            "another --workdir") from None
    if saved_state is None or STATE not in saved_items:
      raise CheckpointError(f"{where} holds no train state; {_FIX}")
    _check_fits(where, getattr(saved_state, "tree", saved_state), abstract_state)
    items = {STATE: ocp.args.StandardRestore(jax.tree.map(_restore_target, abstract_state))}
    if data_iterator is not None:
      if DATA not in saved_items:
        raise CheckpointError(f"{where} holds no input-pipeline position; {_FIX}")
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax, tensorstore or grain errors
      raise CheckpointError(f"cannot restore {where} ({_brief(e)}); either its files are "
                            f"damaged (delete {self._step_dir(step)} to resume from an earlier "
                            f"step) or {_FIX}") from None
    return restored[STATE]

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def restore_best(self, abstract_state: PyTree) -> tuple[int, PyTree]:
    """(step, state) of the best kept checkpoint by `best_metric`, for evaluation."""
    step = self.best_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory} carries a {self.best_metric!r} "
                            "value (none was saved with validation metrics); evaluate with "
                            "the latest step instead, or train until a validation has run")
    return step, self.restore(step, abstract_state)

  def wait(self) -> None:
    """Blocks until every started save is on disk (and old steps are removed)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _restore_target(leaf):
  """A restore target for one leaf: arrays keep their sharding, other leaves pass through."""
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


def _shape(leaf) -> tuple:
  return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def _dtype(leaf) -> Optional[np.dtype]:
  dtype = getattr(leaf, "dtype", None)
  return None if dtype is None else np.dtype(dtype)


def _describe(leaf) -> str:
  dtype = _dtype(leaf)
  return f"{_shape(leaf)}" + ("" if dtype is None else f" {dtype.name}")


def _check_fits(where: str, saved_tree: PyTree, abstract_state: PyTree) -> None:
  """Raises CheckpointError unless the saved leaves match `abstract_state` in path/shape/dtype."""
  saved = {"/".join(k): v for k, v in ocp.tree.to_flat_dict(saved_tree).items()}
  wanted = {"/".join(k): v for k, v in ocp.tree.to_flat_dict(abstract_state).items()}
  problems = [f"{k} is not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
  problems += [f"{k} is saved but not in the state" for k in sorted(saved.keys() - wanted.keys())]
  for key in sorted(wanted.keys() & saved.keys()):
    s, w = saved[key], wanted[key]
    dtypes = (_dtype(s), _dtype(w))
    if _shape(s) != _shape(w) or (None not in dtypes and dtypes[0] != dtypes[1]):
      problems.append(f"{key}: saved {_describe(s)}, expected {_describe(w)}")
  if problems:
    raise CheckpointError(f"{where} does not fit the train state of this config "
                          f"({len(problems)} differences, first: {problems[0]}); {_FIX}")


def _brief(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:300]}"
