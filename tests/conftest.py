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
# Unoptimised XLA programs (set before the backend starts): the suite compiles many small
# programs and runs few steps of each, so optimisation passes cost more than they save
# (measured on the 2-core CPU: the four slowest training-test files 362 s -> 279 s).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

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
  # The stored synthetic size and the paper's crop (the demo's are smaller, for CPU training).
  c.data.image_size, c.data.crop_size = 256, 224
  c.data.num_examples = num_examples
  c.data.num_shards = 2
  c.data.build_workers = 0
  c.data.num_workers = 0
  c.data.oversample.enabled = False  # plain epochs; the tests of oversampling switch it on
  c.text.min_count = 1
  c.train.batch_size = 4
  # R2Gen's beam, which most tests re-derive; the demo's MBR has its own (tests/test_mbr.py and
  # test_eval_mode.py's MBR eval)
  c.decode.method = "beam"
  return c


def tiny_model_config(data_dir: str, num_examples: int = 60) -> ml_collections.ConfigDict:
  """`tiny_config` with a model that compiles in seconds: ResNet-18 at width 8 on 32-pixel crops,
  d 32, one encoder and one decoder layer; beam 2 over 24 tokens; no val eval, no METEOR."""
  c = tiny_config(data_dir, num_examples)
  c.data.image_size, c.data.crop_size, c.data.max_tokens = 40, 32, 24
  m = c.model
  m.resnet_depth, m.resnet_width, m.d_model, m.d_ff, m.num_heads = 18, 8, 32, 64, 4
  m.num_encoder_layers = m.num_decoder_layers = 1
  m.rm_num_slots, m.rm_num_heads, m.rm_d_model = 2, 4, 32
  c.decode.beam_size, c.decode.max_len = 2, 24
  c.eval.batch_size, c.eval.meteor, c.eval.baselines = 8, False, True
  c.train.batch_size = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 0
  c.train.eval_every = 0
  return c


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
  """(config, PreparedDataset) of a 60-study synthetic build."""
  from cnx2rg_jax.data import dataset  # pylint: disable=import-outside-toplevel
  config = tiny_config(str(tmp_path_factory.mktemp("tfds")))
  return config, dataset.prepare(config.data)
