"""Config files read by path, as launch.py's --config flag reads them (ml_collections'
config_flags): how a command other than launch.py gets its config, so that no library module
imports configs/ (configs are passed in).

    load("configs/cnx2rg.py:paper")   # that file's get_config("paper"), a ConfigDict
    getter("configs/cnx2rg.py")       # variant -> that file's get_config(variant)
    module("configs/cnx2rg.py")       # the file as a module (its constants, e.g. ABLATIONS)

A relative path that the working directory does not hold is read from the repository root, so
that a command's default (configs/...) works wherever it runs. The configs import each other as
`configs.*`, so the repository root must be importable (it is for `python -m` from there).
"""

from __future__ import annotations

import importlib.util
import pathlib
import types
from typing import Callable

import ml_collections
from ml_collections.config_flags import config_flags

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def resolve(path: str) -> str:
  """`path`, or REPO_ROOT/`path` when it is relative and only the repository holds it."""
  p = pathlib.Path(path)
  if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
    return str(REPO_ROOT / p)
  return str(p)


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of FILE[:VARIANT]: FILE's get_config(VARIANT) (get_config() without one),
  unlocked, as get_config returns it. OSError when FILE cannot be read."""
  path, colon, variant = spec.partition(":")
  parser = config_flags.ConfigFileFlagParser(name="config", lock_config=False)
  config = parser.parse(resolve(path) + colon + variant)
  config.keys()  # a file that failed to load raises here (ml_collections defers the error)
  return config


def getter(path: str) -> Callable[[str], ml_collections.ConfigDict]:
  """variant -> the config `load` gives for PATH:variant ("" is the file's default)."""
  return lambda variant="": load(f"{path}:{variant}")


def module(path: str) -> types.ModuleType:
  """The config file at `path` run as a module (for its constants)."""
  resolved = resolve(path)
  spec = importlib.util.spec_from_file_location("cnx2rg_config_file", resolved)
  if spec is None or spec.loader is None:
    raise OSError(f"cannot read the config file {resolved}")
  out = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(out)
  return out
