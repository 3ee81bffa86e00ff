"""The one entry point of cnx2rg-jax.

    python launch.py --config=configs/cnx2rg.py [--workdir=DIR] [--mode=...] [--config.KEY=VALUE]

Flags and optional multi-host start-up only; the logic lives in `cnx2rg_jax.run`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from cnx2rg_jax import distributed, run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnx2rg.py[:paper].")
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Run directory (config, tokenizer, checkpoints).")
_MODE = flags.DEFINE_enum("mode", "train", run.MODES, "What to run.")
_SPLIT = flags.DEFINE_string("split", "test", "Split for --mode=eval.")
_IMAGES = flags.DEFINE_list(
    "images", [], "Files or folders for --mode=predict (PNG, JPEG, DICOM). A model of several "
    "views a study (R2Gen's IU X-Ray) takes study folders, folders of them, or FRONTAL+LATERAL.")
_OUTPUT = flags.DEFINE_string("output", "", "Output file for --mode=predict (default stdout).")
_CARD = flags.DEFINE_bool(
    "card", False, "--mode=eval and --mode=predict: also write the report card, an HTML page "
    "(eval: DIR/eval/<split>_card/index.html; predict: DIR/predict_card/index.html). "
    "--mode=train writes the test card when config card.enabled is true. --card=DIR is "
    "--card --card_dir=DIR.")
_CARD_DIR = flags.DEFINE_string(
    "card_dir", "", "Folder for the report card of --mode=eval or --mode=predict instead of the "
    "default; implies --card.")
_JSON = flags.DEFINE_bool("json", False, "--mode=table1: print the keyword counts as JSON.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: HOST:PORT of process 0, or 'auto' to let JAX read "
    "a cluster's variables (SLURM and Open MPI tasks are detected without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 100, "Multi-host: seconds without a heartbeat from a process (it "
    "died) after which every other process stops with an error instead of waiting.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    started = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                                     _PROCESS_ID.value, _TIMEOUT.value)
  except distributed.DistributedConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if started:
    print(started, file=sys.stderr, flush=True)
    distributed.quiet_unless_first()
  try:
    config = _CONFIG.value
    config.keys()  # a config file that failed to load raises here, not at parse time
  except OSError as e:  # ml_collections reports a missing config file only when it is read
    print(f"error: {str(e).splitlines()[-1].strip()}: no such config file "
          f"({flags.FLAGS['config'].serialize()}); see configs/ for the ones there are",
          file=sys.stderr)
    return 2
  return run.main(config, workdir=_WORKDIR.value, mode=_MODE.value, split=_SPLIT.value,
                  images=_IMAGES.value, output=_OUTPUT.value, card=_CARD.value,
                  card_dir=_CARD_DIR.value, config_name=_config_name(), as_json=_JSON.value)


def _config_name() -> str:
  """The --config flag's value as given (file and variant), for the report card."""
  try:
    return flags.FLAGS["config"].serialize().split("=", 1)[1]
  except (IndexError, KeyError, AttributeError):
    return ""


BOOL_WORDS = ("true", "false", "t", "f", "1", "0", "yes", "no")


def card_path_flags(argv):
  """`--card=DIR` (a folder, not true/false) -> `--card --card_dir=DIR`: the card flag is a
  switch that also takes the card's folder."""
  out = []
  for arg in argv:
    value = arg.split("=", 1)[1] if arg.startswith("--card=") else None
    if value is not None and value.lower() not in BOOL_WORDS:
      out += ["--card", f"--card_dir={value}"]
    else:
      out.append(arg)
  return out


def parse_flags(argv):
  """absl's parsing, with one-paragraph errors for a bad config file, key or value."""
  argv = card_path_flags(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    # An exception inside the config file arrives with its traceback: keep what and why.
    message = lines[0] if len(lines) < 2 or "Traceback" not in str(e) else f"{lines[0]} {lines[-1]}"
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no config key
    message = run.unknown_key_message(argv, e)
  except (FileNotFoundError, ValueError, TypeError) as e:  # loading the config file
    message = f"cannot load the config: {e}"
  print(f"error: {message}\nSee --helpshort for the flags; config keys are listed in the "
        "config file (e.g. configs/cnx2rg.py).", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
