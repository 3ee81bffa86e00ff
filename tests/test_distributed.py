"""launch.py's multi-process start-up: which flags start jax.distributed and how, and the errors.

The calls to `jax.distributed.initialize` are recorded instead of made; tests/test_multiprocess.py
starts real processes.
"""

import pytest

from cnx2rg_jax import distributed


class Recorder:
  def __init__(self):
    self.calls = []

  def __call__(self, *args, **kwargs):
    self.calls.append((args, kwargs))


def test_explicit_loopback_coordinator_binds_to_loopback_only():
  init = Recorder()
  line = distributed.initialize("127.0.0.1:4321", 2, 1, timeout_s=7, env={}, init=init)
  assert init.calls == [(("127.0.0.1:4321", 2, 1),
                         {"heartbeat_timeout_seconds": 7,
                          "coordinator_bind_address": "127.0.0.1:4321"})]
  assert "--coordinator_address=127.0.0.1:4321" in line and "7 s" in line


def test_other_hosts_bind_as_jax_chooses():
  init = Recorder()
  distributed.initialize("10.0.0.5:4321", 4, 0, env={}, init=init)
  assert init.calls[0][1]["coordinator_bind_address"] is None


def test_one_process_starts_nothing():
  init = Recorder()
  assert distributed.initialize(None, None, None, env={}, init=init) is None
  assert init.calls == []


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "SLURM"),
    ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # one task: a single process
    ({}, None),
])
def test_cluster_launchers_are_detected(env, expected):
  assert distributed.detected_cluster(env) == expected
  init = Recorder()
  distributed.initialize(None, None, None, timeout_s=30, env=env, init=init)
  # A detected cluster (and only then) starts JAX with no address: JAX reads the variables.
  assert init.calls == ([((), {"heartbeat_timeout_seconds": 30})] if expected else [])


def test_auto_asks_jax_to_detect():
  init = Recorder()
  distributed.initialize("auto", None, None, env={}, init=init)
  assert init.calls == [((), {"heartbeat_timeout_seconds": 100})]


@pytest.mark.parametrize("flags, message", [
    (("127.0.0.1:1", None, 0), "needs --num_processes too"),
    (("127.0.0.1:1", 2, None), "needs --process_id too"),
    (("127.0.0.1:1", 2, 2), "--process_id=2 is not in 0..1"),
    ((None, 2, 0), "--num_processes and --process_id without --coordinator_address"),
    ((None, None, 1), "--process_id without --coordinator_address"),
])
def test_flags_that_do_not_go_together(flags, message):
  init = Recorder()
  with pytest.raises(distributed.DistributedConfigError, match=message):
    distributed.initialize(*flags, env={}, init=init)
  assert init.calls == []


def test_timeout_must_be_positive():
  with pytest.raises(distributed.DistributedConfigError, match="--distributed_timeout=0"):
    distributed.initialize("127.0.0.1:1", 2, 0, timeout_s=0, env={}, init=Recorder())


class _RecordingClient:
  """Stands in for the coordination-service client: records barrier keys and timeouts."""

  def __init__(self, events):
    self.events = events

  def wait_at_barrier(self, key, timeout_ms):
    self.events.append(("barrier", key, timeout_ms))


@pytest.mark.parametrize("index", [0, 1])
def test_first_then_others_meets_at_coordination_barriers(monkeypatch, index):
  events = []
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  monkeypatch.setattr(distributed.jax, "process_index", lambda: index)
  monkeypatch.setattr(distributed.jax_distributed.global_state, "client",
                      _RecordingClient(events))
  monkeypatch.setattr(distributed, "_barrier_uses", distributed.collections.Counter())
  for _ in range(2):
    result = distributed.first_then_others(lambda: events.append(("work",)) or "done",
                                           "tokenizer")
    assert result == "done"  # every process gets its own fn()'s result
  kinds = [e[0] for e in events]
  # Process 0 works before the first barrier; the others between the two barriers.
  once = ["work", "barrier", "barrier"] if index == 0 else ["barrier", "work", "barrier"]
  assert kinds == once * 2
  keys = [e[1] for e in events if e[0] == "barrier"]
  assert len(set(keys)) == 4  # a barrier id is never reused
  assert all(e[2] == distributed.BARRIER_TIMEOUT_S * 1000 for e in events if e[0] == "barrier")


def test_one_process_passes_barriers_without_a_client(monkeypatch):
  monkeypatch.setattr(distributed.jax_distributed.global_state, "client", None)
  distributed.barrier("anything")  # one process: nothing to wait for, no client needed
  jitted = distributed.jax.jit(lambda x: x + 1)
  assert distributed.compiled_together(jitted, 1) is jitted
