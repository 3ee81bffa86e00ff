"""Multi-process start-up: `jax.distributed` from launch.py's flags or a cluster's environment,
process 0 as the one that talks, and work that process 0 must do first.

    python launch.py ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I
    python launch.py ... --coordinator_address=auto     # JAX reads the cluster's variables
    srun python launch.py ...                           # SLURM / Open MPI: detected, as 'auto'

A process that stops sending heartbeats for `--distributed_timeout` seconds (it died, or its
host did) makes JAX's coordination service stop every other process with an error that says a
task died, instead of leaving them waiting in a collective forever.

Processes meet at the coordination service's barriers (`barrier`), never at a device
collective: on CPUs the collectives are Gloo's, whose communicators must be joined by every
process within a fixed 30 s, so a process that is still building the dataset or compiling while
another already waits in a collective would fail the run. For the same reason a multi-process
run compiles its train step on every process before the first step (`compiled_together`).
"""

from __future__ import annotations

import collections
import os
import sys
from typing import Any, Callable, Mapping, Optional, TypeVar

import jax
from jax._src import distributed as jax_distributed  # the coordination-service client

from cnx2rg_jax.errors import UserError

T = TypeVar("T")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# How long a process waits at a barrier for the slowest one (building a release's dataset,
# compiling the paper model). A process that died is reported sooner, by the heartbeat timeout.
BARRIER_TIMEOUT_S = 6 * 3600
_barrier_uses: collections.Counter = collections.Counter()
# Launchers whose variables JAX's cluster detection reads: name -> (variable, tasks variable).
CLUSTER_LAUNCHERS = {"SLURM": ("SLURM_JOB_ID", "SLURM_NTASKS"),
                     "Open MPI": ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE")}


class DistributedConfigError(UserError):
  """Multi-process flags that do not go together."""


def detected_cluster(env: Mapping[str, str] = os.environ) -> Optional[str]:
  """The launcher that started this process as one of several tasks, or None."""
  for name, (marker, tasks) in CLUSTER_LAUNCHERS.items():
    if marker in env and int(env.get(tasks, "1") or "1") > 1:
      return name
  return None


def _host(address: str) -> str:
  return address.rsplit(":", 1)[0] if ":" in address else address


def initialize(coordinator_address: Optional[str], num_processes: Optional[int],
               process_id: Optional[int], timeout_s: int = 100,
               env: Mapping[str, str] = os.environ,
               init: Callable = jax.distributed.initialize) -> Optional[str]:
  """Starts `jax.distributed` when the flags or the environment ask for several processes;
  returns a line that says how (None: one process, nothing started).

  A loopback coordinator address is also the address the coordinator binds to, so a run on one
  machine listens on nothing else. Raises DistributedConfigError for flags that do not fit.
  """
  if timeout_s < 1:
    raise DistributedConfigError(f"--distributed_timeout={timeout_s}; it must be >= 1 second")
  explicit = coordinator_address not in (None, "", "auto")
  cluster = detected_cluster(env)
  given = [f for f, v in (("--num_processes", num_processes), ("--process_id", process_id))
           if v is not None]
  if explicit:
    missing = [f for f in ("--num_processes", "--process_id") if f not in given]
    if missing:
      raise DistributedConfigError(
          f"--coordinator_address={coordinator_address} needs {' and '.join(missing)} too: "
          "every process gets the same address and process count and its own id in "
          "0..num_processes-1 (or use --coordinator_address=auto under a cluster launcher)")
    if not 0 <= process_id < num_processes:
      raise DistributedConfigError(f"--process_id={process_id} is not in 0..{num_processes - 1} "
                                   f"(--num_processes={num_processes})")
    bind = coordinator_address if _host(coordinator_address) in LOOPBACK_HOSTS else None
    init(coordinator_address, num_processes, process_id, heartbeat_timeout_seconds=timeout_s,
         coordinator_bind_address=bind)
    how = f"--coordinator_address={coordinator_address}"
  elif given:
    raise DistributedConfigError(f"{' and '.join(given)} without --coordinator_address: give "
                                 "the coordinator's HOST:PORT as well (or 'auto' under a "
                                 "cluster launcher, which sets all three)")
  elif coordinator_address == "auto" or cluster:
    init(heartbeat_timeout_seconds=timeout_s)
    how = f"the {cluster or 'cluster'} environment"
  else:
    return None
  return (f"process {jax.process_index()} of {jax.process_count()} ({how}); "
          f"{jax.local_device_count()} local of {jax.device_count()} devices; a process silent "
          f"for {timeout_s} s stops the run")


def quiet_unless_first() -> None:
  """Sends this process's stdout to /dev/null unless it is process 0 (stderr stays): the logs,
  tables and predictions are process 0's; errors come from every process."""
  if jax.process_index() != 0:
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process's life)


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Waits until every process has reached the barrier `name` (one process: returns at once).

  The coordination service's barrier, not a device collective (see the module docstring).
  Every process must pass the same barriers in the same order.
  """
  if jax.process_count() == 1:
    return
  _barrier_uses[name] += 1
  client = jax_distributed.global_state.client
  client.wait_at_barrier(f"cnx2rg/{name}/{_barrier_uses[name]}", int(timeout_s * 1000))


def compiled_together(jitted: Any, *args) -> Callable:
  """The jitted function compiled for `args` on every process, which then meet at a barrier.

  Its first run (the first collective of a multi-process run) then starts on all processes
  within moments of each other, however long each took to compile. One process: `jitted` as it
  is, compiled on its first call.
  """
  if jax.process_count() == 1:
    return jitted
  compiled = jitted.lower(*args).compile()
  barrier("compiled")
  return compiled


def first_then_others(fn: Callable[[], T], what: str) -> T:
  """`fn()` on process 0, then (after a barrier) on the others, then a barrier.

  For work whose files the others then reuse, such as building the dataset or the run's
  tokenizer in a shared folder: process 0 writes them alone, and another process finds them
  done (or, on a host that does not share the folder, makes its own copy). One process: fn().
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  barrier(f"{what}, process 0")
  if jax.process_index() != 0:
    result = fn()
  barrier(f"{what}, all processes")
  return result
