"""Shared fixtures: tiny synthetic builds, made once per test session."""

import os
import pathlib
import tempfile

import jax
import ml_collections
import pytest

# Tests run on the CPU, quietly, whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Several tests compile the same small train step (fresh closures, same HLO); XLA:CPU takes
# tens of seconds for a ResNet step, so compiled programs are cached on disk across tests.
jax.config.update("jax_compilation_cache_dir",
                  str(pathlib.Path(tempfile.gettempdir()) / "cnx2rg_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def tiny_config(data_dir: str, num_examples: int = 60) -> ml_collections.ConfigDict:
  """configs/cnx2rg.py shrunk for tests: a small synthetic set, in-process input pipeline."""
  from configs import cnx2rg  # pylint: disable=import-outside-toplevel
  c = cnx2rg.get_config()
  c.data.data_dir = data_dir
  c.data.num_examples = num_examples
  c.data.num_shards = 2
  c.data.build_workers = 0
  c.data.num_workers = 0
  c.text.min_count = 1
  c.train.batch_size = 4
  return c


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
  """(config, PreparedDataset) of a 60-study synthetic build."""
  from cnx2rg_jax.data import dataset  # pylint: disable=import-outside-toplevel
  config = tiny_config(str(tmp_path_factory.mktemp("tfds")))
  return config, dataset.prepare(config.data)
