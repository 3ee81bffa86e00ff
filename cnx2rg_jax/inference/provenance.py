"""What a run's model was trained on, carried by every output made with it.

    DIR/provenance.json   {"trained_on": {...}, "checkpoint_step": N, "chosen_by": "..."}
    DIR/config.json       gains "provenance": "provenance.json" (a pointer; still a config)

"trained_on" holds the dataset ("cncxr", or an R2Gen checkpoint's), its config ("synthetic" or
"release"), the TFDS build name, the number of training studies, the report language, whether
the images were synthetic, and where the data came from. --mode=train writes the file after
training, the R2Gen converter when it converts; a run made before either did has none, and its
provenance is then read off the config (`recorded: false`, training studies unknown).
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import jax

from cnx2rg_jax.data import dataset

PROVENANCE_FILE = "provenance.json"
CONFIG_FILE = "config.json"  # config_checks.CONFIG_FILE; the pointer to this file goes there
CONFIG_POINTER_KEY = "provenance"

# One sentence, on every predict line of a model trained on synthetic images and once on stderr.
SYNTHETIC_WARNING = (
    "This model was trained only on synthetic radiographs drawn by this project's generator, "
    "never on real patients' images, so its report says nothing reliable about a real "
    "radiograph; outputs are for research and are not a diagnosis.")


def trained_on(config, prepared: dataset.PreparedDataset) -> dict:
  """The "trained_on" record of a run of `config` trained on the build `prepared`."""
  name = config.data.name
  return {"dataset": "cncxr", "config": name, "build": prepared.builder.builder_config.name,
          "train_studies": int(prepared.num_examples("train")), "language": prepared.language,
          "synthetic": name == "synthetic",
          "source": (f"synthetic generator, seed {config.data.synthetic_seed}"
                     if name == "synthetic" else str(config.data.manual_dir)),
          "recorded": True}


def trained_on_from_config(config) -> dict:
  """The record as far as `config` tells it, for runs that saved none (`recorded` false)."""
  name = config.data.name
  try:
    build = dataset.builder_config(config.data, dataset.num_views(config)).name
  except dataset.DataConfigError:
    build = None
  return {"dataset": "cncxr", "config": name, "build": build, "train_studies": None,
          "language": "zh" if name == "synthetic" else config.data.language,
          "synthetic": name == "synthetic",
          "source": (f"synthetic generator, seed {config.data.synthetic_seed}"
                     if name == "synthetic" else str(config.data.manual_dir)),
          "recorded": False}


def write(workdir: str, record: dict, checkpoint_step: int, chosen_by: str) -> None:
  """DIR/provenance.json, and the pointer to it in DIR/config.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  folder = pathlib.Path(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / PROVENANCE_FILE).write_text(json.dumps(
      {"trained_on": record, "checkpoint_step": int(checkpoint_step), "chosen_by": chosen_by},
      ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
  config_path = folder / CONFIG_FILE
  if config_path.is_file():
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    if saved.get(CONFIG_POINTER_KEY) != PROVENANCE_FILE:
      saved[CONFIG_POINTER_KEY] = PROVENANCE_FILE
      config_path.write_text(json.dumps(saved, ensure_ascii=False, indent=2) + "\n",
                             encoding="utf-8")


def read(workdir: str) -> Optional[dict]:
  """DIR/provenance.json's content, or None when the run has none (or it cannot be read)."""
  path = pathlib.Path(workdir) / PROVENANCE_FILE
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return None


def for_run(config, workdir: str, checkpoint_step: int) -> dict:
  """{"trained_on", "checkpoint_step"} of the run in `workdir` as loaded now (the step is the
  checkpoint in use, whatever the file recorded)."""
  saved = read(workdir)
  record = saved["trained_on"] if saved and isinstance(saved.get("trained_on"), dict) else (
      trained_on_from_config(config))
  return {"trained_on": record, "checkpoint_step": int(checkpoint_step)}


def is_synthetic(fields: dict) -> bool:
  return bool(fields["trained_on"].get("synthetic"))


def describe(fields: dict) -> str:
  """One line for the card's header and logs: 'cncxr/synthetic_... (synthetic, 42 training
  studies, zh), checkpoint step 6'."""
  t = fields["trained_on"]
  studies = "training studies not recorded" if t.get("train_studies") is None else (
      f"{t['train_studies']} training studies")
  kind = "synthetic images" if t.get("synthetic") else "real images"
  build = f"/{t['build']}" if t.get("build") else ""
  return (f"{t.get('dataset')}{build} ({kind}, {studies}, language {t.get('language')}), "
          f"checkpoint step {fields['checkpoint_step']}")
