"""Several processes on loopback: 2 processes x 2 simulated CPU devices (data parallel) train as
1 process x 4 devices (FSDP + tensor parallel on a (2, 2) mesh) does, their checkpoint resumes in
1 process on that other mesh and layout, and a dead process stops the other one instead of
leaving it waiting.

Each run is `tests/helpers/multiprocess_train.py` in its own process(es), with jax.distributed's
coordinator bound to 127.0.0.1 on a free port. The learning rate is small (1e-5) so that Adam's
sign-like first updates do not turn the 1e-7 rounding differences of another reduction order
into visible loss differences (see tests/helpers/sharded_step.py).
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_model_config

REPO = pathlib.Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "multiprocess_train.py"
pytestmark = pytest.mark.multiprocess
RTOL = 1e-5


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(data_dir, workdir, steps, *, devices=4, mesh="2,2", strategy="fsdp_tensor",
           processes=1, pid=0, port=0, extra=()) -> subprocess.Popen:
  args = [sys.executable, str(HELPER), f"--data_dir={data_dir}", f"--workdir={workdir}",
          f"--steps={steps}", f"--devices={devices}", f"--mesh={mesh}", f"--strategy={strategy}",
          f"--num_processes={processes}", f"--process_id={pid}", f"--port={port}", *extra]
  # Fast XLA compiles: a few tiny steps do not pay back the optimizer's compile time.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "MP_XLA_FLAGS": "--xla_backend_optimization_level=0"}
  return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=REPO)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"a training process did not finish in {timeout} s; its log:\n{err[-3000:]}")
  return proc.returncode, out, err


def _result(proc: subprocess.Popen) -> tuple[dict, str]:
  rc, out, err = _finish(proc)
  assert rc == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from cnx2rg_jax.data import dataset  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("tfds_mp"))
  dataset.prepare(tiny_model_config(path).data)
  return path


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("mp_runs")
  port = _free_port()
  # At the same time: 2 processes x 2 devices on a data-parallel mesh, parameters replicated,
  # 5 steps, checkpoint at the end; and 1 process x 4 devices on a (2, 2) data x model mesh,
  # parameters split by FSDP and tensor parallelism, 7 steps straight (the reference).
  two = [_start(data_dir, root / "two", 5, devices=2, mesh="-1", strategy="data", processes=2,
                pid=i, port=port) for i in (0, 1)]
  one_proc = _start(data_dir, root / "one", 7)
  two_result, _ = _result(two[0])
  assert _finish(two[1])[0] == 0
  one, _ = _result(one_proc)
  # Then the 2-process checkpoint, resumed by 1 process on the (2, 2) FSDP mesh, to step 7.
  shutil.copytree(root / "two", root / "resumed")
  resumed, log = _result(_start(data_dir, root / "resumed", 7))
  return {"two": two_result, "one": one, "resumed": resumed, "resumed_log": log}


def test_two_processes_train_as_one_process_does(runs):
  two, one = runs["two"], runs["one"]
  assert (two["processes"], two["devices"]) == (2, 4) and (one["processes"], one["devices"]) == (1, 4)
  assert list(two["losses"]) == ["1", "2", "3", "4", "5"]
  for step, loss in two["losses"].items():
    assert loss == pytest.approx(one["losses"][step], rel=RTOL), step
  assert len(set(one["losses"].values())) == 7  # different batches: not a constant


def test_their_checkpoint_resumes_in_one_process_on_another_mesh(runs):
  resumed, one = runs["resumed"], runs["one"]
  assert resumed["workdir"].endswith("resumed") and "resumed from step 5" in runs["resumed_log"]
  assert "saved by another number of processes" in runs["resumed_log"]
  assert list(resumed["losses"]) == ["6", "7"]  # it continued, with the batches of steps 6, 7
  for step, loss in resumed["losses"].items():
    assert loss == pytest.approx(one["losses"][step], rel=RTOL), step
  for a, b in zip(resumed["param_sums"], one["param_sums"]):
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)


def test_a_dead_process_stops_the_other(data_dir, tmp_path):
  port = _free_port()
  timeout_s = 5
  procs = [_start(data_dir, tmp_path / "wd", 50, devices=2, mesh="-1", strategy="data",
                  processes=2, pid=i,
                  port=port, extra=[f"--timeout={timeout_s}"]
                  + (["--die_after_step=1"] if i == 1 else [])) for i in (0, 1)]
  rc1, _, _ = _finish(procs[1])
  died = time.monotonic()
  rc0, _, err0 = _finish(procs[0], timeout=120)
  waited = time.monotonic() - died
  assert rc1 == 3  # the helper's crash exit
  assert rc0 != 0, "the surviving process finished as if nothing happened"
  assert "step 50/50" not in err0
  assert "another task died" in err0 or "stopped sending heartbeats" in err0, err0[-2000:]
  # It stopped within the heartbeat timeout (plus start-up slack), not after the 120 s guard.
  assert waited < timeout_s + 60, waited
