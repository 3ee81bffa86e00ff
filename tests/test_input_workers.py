"""The input pipeline's worker processes end when the process that started them is killed."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from cnx2rg_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


def _children(pid: int) -> set[int]:
  out = set()
  for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
    try:
      out |= {int(c) for c in (task / "children").read_text().split()}
    except OSError:
      pass
  return out


def _descendants(pid: int) -> set[int]:
  seen, todo = set(), [pid]
  while todo:
    for c in _children(todo.pop()):
      if c not in seen:
        seen.add(c)
        todo.append(c)
  return seen


def test_parent_alive_reads_proc():
  assert pipeline._parent_alive(os.getpid())  # pylint: disable=protected-access
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  assert not pipeline._parent_alive(child.pid)  # pylint: disable=protected-access


def test_workers_exit_after_the_training_process_is_killed(tiny_synthetic):
  config, _ = tiny_synthetic
  script = textwrap.dedent(f"""
      import sys, time
      from tests.conftest import tiny_config
      from cnx2rg_jax.data import dataset, pipeline, vocabulary
      c = tiny_config({config.data.data_dir!r})
      c.data.num_workers = 2
      prepared = dataset.prepare(c.data)
      tok = vocabulary.tokenizer_for_run(c.text, prepared, workdir=None)
      it = iter(pipeline.train_dataset(prepared, c.data, tok, batch_size=4, seed=0,
                                       shard=pipeline.ProcessShard(0, 1)))
      next(it)
      print("ready", flush=True)
      time.sleep(600)
  """)
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "ready"
    workers = _descendants(proc.pid)
    assert len(workers) >= 2, workers  # the two grain workers (and any helper they started)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pipeline._parent_alive(w) for w in workers):  # pylint: disable=protected-access
      time.sleep(0.5)
    left = [w for w in workers if pipeline._parent_alive(w)]  # pylint: disable=protected-access
    assert not left, f"input workers {left} outlived their killed parent"
  finally:
    if proc.poll() is None:
      proc.kill()
    for w in _descendants(proc.pid) if proc.poll() is None else ():
      os.kill(w, signal.SIGKILL)
