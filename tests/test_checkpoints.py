"""Training checkpoints: exact resume (arrays and grain iterator), last+best retention, sharded
restore, and the errors for checkpoints that do not fit."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.training.checkpoints import CheckpointError, Checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(step: int = 0, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"params": {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
                     "b": jnp.asarray(rng.standard_normal(3), jnp.float32)},
          "counts": jnp.asarray(rng.integers(-1000, 1000, (5,)), jnp.int32),
          "step": jnp.asarray(step, jnp.int32)}


def _abstract(state) -> dict:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _same_bits(a, b) -> bool:
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _plain_iter():
  return grain.MapDataset.range(100).shuffle(seed=0).map(lambda x: x * 2).to_iter_dataset()\
      .__iter__()


def _batched_iter():
  return grain.MapDataset.range(50).shuffle(seed=3).map(lambda x: x + 1).batch(4)\
      .to_iter_dataset().__iter__()


@pytest.mark.parametrize("make_iter", [_plain_iter, _batched_iter], ids=["plain", "batched"])
def test_resume_gives_back_exact_arrays_and_next_elements(tmp_path, make_iter):
  state = _state(step=7)
  it = make_iter()
  for _ in range(5):
    next(it)
  ckpts = Checkpoints(str(tmp_path))
  assert ckpts.save(7, state, it)
  # The position is taken when save returns, not when the background write ends.
  expected = [np.asarray(next(it)) for _ in range(4)]
  ckpts.close()

  reopened = Checkpoints(str(tmp_path))
  assert reopened.latest_step() == 7
  fresh = make_iter()
  restored = reopened.restore(None, _abstract(state), fresh)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  assert all(jax.tree.leaves(jax.tree.map(_same_bits, restored, state)))
  assert all(np.array_equal(np.asarray(next(fresh)), want) for want in expected)
  reopened.close()


def test_restore_without_iterator_and_into_concrete_arrays(tmp_path):
  state = _state(step=1, seed=4)
  with Checkpoints(str(tmp_path)) as ckpts:
    ckpts.save(1, state, _plain_iter())
  with Checkpoints(str(tmp_path)) as ckpts:
    like = jax.tree.map(jnp.zeros_like, state)  # arrays as targets: their shardings are used
    restored = ckpts.restore(1, like)
  assert all(jax.tree.leaves(jax.tree.map(_same_bits, restored, state)))


def _expected_kept(bleus, keep_last, keep_best) -> set[int]:
  steps = list(range(1, len(bleus) + 1))
  scored = sorted((b, s) for s, b in zip(steps, bleus) if b is not None)
  return set(steps[-keep_last:]) | {s for _, s in scored[len(scored) - keep_best:]}


def test_keeps_last_two_and_best_by_bleu4(tmp_path):
  bleus = [0.1, 0.5, 0.2, 0.3, None, 0.05]
  want = _expected_kept(bleus, keep_last=2, keep_best=1)
  assert want == {2, 5, 6}
  ckpts = Checkpoints(str(tmp_path), keep_last=2, keep_best=1, best_metric="bleu_4")
  for step, bleu in enumerate(bleus, 1):
    metrics = None if bleu is None else {"bleu_4": bleu, "loss": np.float32(1.0 / step)}
    assert ckpts.save(step, _state(step=step, seed=step), metrics=metrics)
  ckpts.wait()
  assert set(ckpts.all_steps()) == want
  assert ckpts.best_step() == 2
  ckpts.close()
  assert {int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()} == want

  reopened = Checkpoints(str(tmp_path), keep_last=2, keep_best=1)
  assert set(reopened.all_steps()) == want
  assert reopened.latest_step() == 6 and reopened.best_step() == 2
  step, restored = reopened.restore_best(_abstract(_state()))
  assert step == 2
  assert all(jax.tree.leaves(jax.tree.map(_same_bits, restored, _state(step=2, seed=2))))
  # Retention goes on across the reopen: a new best replaces step 2.
  bleus.append(0.9)
  assert reopened.save(7, _state(step=7), metrics={"bleu_4": 0.9})
  reopened.wait()
  assert set(reopened.all_steps()) == _expected_kept(bleus, 2, 1) == {6, 7}
  assert reopened.best_step() == 7
  reopened.close()


def test_metrics_without_the_best_metric_only_count_as_last(tmp_path):
  with Checkpoints(str(tmp_path), keep_last=1, keep_best=1) as ckpts:
    ckpts.save(1, _state(), metrics={"bleu_4": 0.2})
    ckpts.save(2, _state(), metrics={"loss": 3.0})
    ckpts.save(3, _state(), metrics={"bleu_4": None})
    ckpts.wait()
    assert ckpts.all_steps() == [1, 3]
    assert ckpts.best_step() == 1


def test_no_best_without_metrics(tmp_path):
  with Checkpoints(str(tmp_path)) as ckpts:
    ckpts.save(1, _state())
    ckpts.wait()
    assert ckpts.best_step() is None
    with pytest.raises(CheckpointError, match="bleu_4"):
      ckpts.restore_best(_abstract(_state()))


def test_saving_an_existing_step_is_skipped(tmp_path):
  ckpts = Checkpoints(str(tmp_path))
  assert ckpts.save(3, _state(step=3))
  assert not ckpts.save(3, _state(step=99))
  assert not ckpts.save(3, _state(step=99), force=True)
  ckpts.close()
  reopened = Checkpoints(str(tmp_path))
  assert not reopened.save(3, _state(step=99))
  restored = reopened.restore(3, _abstract(_state()))
  assert int(restored["step"]) == 3
  reopened.close()


_SHARDED_SCRIPT = textwrap.dedent("""
  import sys
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from cnx2rg_jax.training.checkpoints import Checkpoints

  assert jax.device_count() == 8, jax.devices()
  devices = np.array(jax.devices())
  save_mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
  values = {"w": np.arange(8 * 6, dtype=np.float32).reshape(8, 6) / 7,
            "v": np.arange(6, dtype=np.int32) - 3,
            "step": np.int32(11)}
  save_specs = {"w": P("data", "model"), "v": P("model"), "step": P()}
  state = {k: jax.device_put(values[k], NamedSharding(save_mesh, save_specs[k])) for k in values}
  ckpts = Checkpoints(sys.argv[1])
  assert ckpts.save(11, state)
  ckpts.close()

  load_mesh = Mesh(devices[::-1].reshape(2, 4), ("a", "b"))
  load_specs = {"w": P("b", None), "v": P(), "step": P()}
  targets = {k: NamedSharding(load_mesh, load_specs[k]) for k in values}
  abstract = {k: jax.ShapeDtypeStruct(values[k].shape, values[k].dtype, sharding=targets[k])
              for k in values}
  restored = Checkpoints(sys.argv[1]).restore(None, abstract)
  for k in values:
    got = restored[k]
    assert got.sharding == targets[k], (k, got.sharding)
    assert got.sharding != state[k].sharding or k == "step", k
    assert np.array_equal(np.asarray(got), values[k]), k
    assert got.dtype == values[k].dtype, k
  print("SHARDED-RESTORE-OK")
""")


def test_sharded_state_restores_into_other_shardings(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(_SHARDED_SCRIPT)
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  done = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "SHARDED-RESTORE-OK" in done.stdout


@pytest.fixture
def saved(tmp_path):
  """A directory with steps 1 and 2 of `_state()` (with iterator position), closed."""
  with Checkpoints(str(tmp_path)) as ckpts:
    ckpts.save(1, _state(step=1), _plain_iter())
    ckpts.save(2, _state(step=2), _plain_iter())
  return tmp_path


@pytest.mark.parametrize("change", ["shape", "dtype", "missing", "extra"])
def test_state_that_does_not_fit_is_refused(saved, change):
  abstract = _abstract(_state())
  if change == "shape":
    abstract["params"]["w"] = jax.ShapeDtypeStruct((4, 5), jnp.float32)
  elif change == "dtype":
    abstract["counts"] = jax.ShapeDtypeStruct((5,), jnp.float32)
  elif change == "missing":
    del abstract["params"]["b"]
  else:
    abstract["params"]["extra"] = jax.ShapeDtypeStruct((2,), jnp.float32)
  with Checkpoints(str(saved)) as ckpts:
    with pytest.raises(CheckpointError) as err:
      ckpts.restore(None, abstract)
  message = str(err.value)
  assert str(saved) in message and "step 2" in message
  assert "does not fit" in message and "--workdir" in message


def test_garbage_step_folder_is_refused(saved):
  (saved / "3").mkdir()
  (saved / "3" / "junk.bin").write_bytes(b"\x00not a checkpoint\xff")
  with Checkpoints(str(saved)) as ckpts:
    with pytest.raises(CheckpointError, match="step 3") as err:
      ckpts.restore(3, _abstract(_state()))
    assert str(saved / "3") in str(err.value)
    # The other steps stay usable.
    assert int(ckpts.restore(2, _abstract(_state()))["step"]) == 2


def test_damaged_array_files_are_refused(saved):
  damaged = 0
  for path in (saved / "2" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"garbage")
      damaged += 1
  assert damaged
  with Checkpoints(str(saved)) as ckpts:
    with pytest.raises(CheckpointError, match="step 2") as err:
      ckpts.restore(2, _abstract(_state()))
  assert str(saved) in str(err.value)


def test_missing_iterator_state_is_refused(tmp_path):
  with Checkpoints(str(tmp_path)) as ckpts:
    ckpts.save(1, _state())
    ckpts.wait()
    with pytest.raises(CheckpointError, match="input-pipeline"):
      ckpts.restore(1, _abstract(_state()), _plain_iter())


def test_unfinished_save_is_not_the_latest(saved):
  # What a save cut short leaves: the step under Orbax's temporary name, never renamed.
  shutil.copytree(saved / "2", saved / "3.orbax-checkpoint-tmp-1700000000")
  with Checkpoints(str(saved)) as ckpts:
    assert ckpts.latest_step() == 2 and ckpts.all_steps() == [1, 2]
    assert int(ckpts.restore(None, _abstract(_state()))["step"]) == 2
    assert ckpts.save(3, _state(step=3))
    ckpts.wait()
    assert ckpts.latest_step() == 3


def test_empty_directory_says_no_checkpoint(tmp_path):
  with Checkpoints(str(tmp_path / "fresh")) as ckpts:
    assert ckpts.latest_step() is None and ckpts.best_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint exists") as err:
      ckpts.restore(None, _abstract(_state()))
    assert str(tmp_path / "fresh") in str(err.value)
    with pytest.raises(CheckpointError, match="step 5"):
      ckpts.restore(5, _abstract(_state()))
