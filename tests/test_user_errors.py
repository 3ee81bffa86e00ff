"""One idea of a user error: every error class of the project is an errors.UserError, which
run.py catches once (a paragraph and exit code 2, no traceback)."""

import ast
import importlib
import pathlib

import pytest

from cnx2rg_jax import errors, run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _error_classes():
  """(module, class name) of every class in cnx2rg_jax/ and tfds_cncxr/ named *Error."""
  found = []
  for package in ("cnx2rg_jax", "tfds_cncxr"):
    for path in sorted((ROOT / package).rglob("*.py")):
      module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
      module = module.removesuffix(".__init__")
      for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
          found.append((module, node.name))
  return found


def test_the_scan_finds_the_errors():
  names = {name for _, name in _error_classes()}
  # a few that must be there, so that an empty scan cannot pass
  assert {"UserError", "ConfigError", "DataConfigError", "CheckpointError",
          "ReleaseFormatError", "NonFiniteLossError"} <= names


@pytest.mark.parametrize("module, name", _error_classes())
def test_every_error_is_a_user_error(module, name):
  cls = getattr(importlib.import_module(module), name)
  assert issubclass(cls, errors.UserError), f"{module}.{name} is not an errors.UserError"
  assert issubclass(cls, ValueError)  # as every one was before the common base


def test_one_checkpoint_error():
  from cnx2rg_jax.radgraph import extractor  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  assert extractor.CheckpointError is checkpoints.CheckpointError is errors.CheckpointError


def test_run_catches_the_base_once():
  assert errors.UserError in run.USER_ERRORS
  assert [e for e in run.USER_ERRORS if e is not errors.UserError] == [
      FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError]
