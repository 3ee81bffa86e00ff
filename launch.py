"""The one entry point of cnx2rg-jax.

    python launch.py --config=configs/cnx2rg.py [--workdir=DIR] [--mode=...] [--config.KEY=VALUE]

Flags and optional multi-host start-up only; the logic lives in `cnx2rg_jax.run`.
"""

from absl import app, flags
from ml_collections import config_flags

from cnx2rg_jax import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnx2rg.py[:paper].")
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Run directory (config, tokenizer, checkpoints).")
_MODE = flags.DEFINE_enum("mode", "train", run.MODES, "What to run.")
_SPLIT = flags.DEFINE_string("split", "test", "Split for --mode=eval.")
_IMAGES = flags.DEFINE_list("images", [], "Files or folders for --mode=predict.")
_OUTPUT = flags.DEFINE_string("output", "", "Output file for --mode=predict (default stdout).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _COORDINATOR.value:
    import jax  # pylint: disable=import-outside-toplevel
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  return run.main(_CONFIG.value, workdir=_WORKDIR.value, mode=_MODE.value, split=_SPLIT.value,
                  images=_IMAGES.value, output=_OUTPUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
