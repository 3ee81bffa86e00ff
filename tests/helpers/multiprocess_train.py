"""One process of a (multi-process) training run of the tiny test model, for the multi-host tests.

    python tests/helpers/multiprocess_train.py --data_dir=D --workdir=W[,W2...] --steps=S --devices=K
        [--num_processes=N --process_id=I --port=P] [--mesh=2,2 --strategy=fsdp_tensor]
        [--die_after_step=J] [--lr=1e-5]

Starts `jax.distributed` on 127.0.0.1:P when N > 1 (through `cnx2rg_jax.distributed`, as
launch.py does), trains `loop.train` on K simulated CPU devices with a constant learning rate
(so that runs of different lengths share their first steps), logging every step, and prints one
JSON line a workdir with the per-step losses and a float64 sum of every parameter leaf (process 0
only); several workdirs are trained one after the other in the same process.
`--die_after_step` makes the process exit abruptly after that step, as a crashed host would.
"""

import argparse
import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def main() -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--data_dir", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, required=True)
  p.add_argument("--devices", type=int, default=4)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--mesh", default="-1")
  p.add_argument("--strategy", default="data")
  p.add_argument("--timeout", type=int, default=100)
  p.add_argument("--die_after_step", type=int, default=0)
  p.add_argument("--lr", type=float, default=1e-5)
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={args.devices} "
                             + os.environ.get("MP_XLA_FLAGS", ""))
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, str(REPO))
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from cnx2rg_jax import distributed  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import loop  # pylint: disable=import-outside-toplevel
  from tests.conftest import tiny_model_config  # pylint: disable=import-outside-toplevel

  if args.num_processes > 1:
    distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id,
                           args.timeout)
  c = tiny_model_config(args.data_dir)
  c.mesh.shape = [int(s) for s in args.mesh.split(",")]
  c.mesh.axes = ["data", "model"][:len(c.mesh.shape)]
  c.mesh.strategy = args.strategy
  tr = c.train
  tr.num_steps, tr.log_every, tr.checkpoint_every = args.steps, 1, 0
  tr.lr_schedule, tr.warmup_steps = "constant", 0
  tr.lr_visual = tr.lr_rest = args.lr

  def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    if args.die_after_step and line.startswith(f"step {args.die_after_step}/"):
      os._exit(3)  # no clean-up, no goodbye to the coordinator: a crash

  for workdir in args.workdir.split(","):  # one process, several runs: compiled once
    result = loop.train(c, workdir, log=log)
    sums = [float(np.sum(np.asarray(jax.device_get(x), np.float64)))
            for x in jax.tree.leaves(result.state.params)]
    if jax.process_index() == 0:
      print(json.dumps({"workdir": workdir,
                        "losses": {str(s): m["loss"] for s, m in result.history},
                        "param_sums": sums, "processes": jax.process_count(),
                        "devices": jax.device_count()}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
