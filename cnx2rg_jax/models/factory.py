"""From the config file's `model` section to a ModelConfig and the CN-X2RG module."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cnx2rg_jax.errors import ConfigError
from cnx2rg_jax.models.cmn import CMNModel
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.text import keywords

# model.architecture -> the module: both share CNX2RG's entry points (CMNModel subclasses it).
ARCHITECTURES = {"r2gen": CNX2RG, "cmn": CMNModel}
# ModelConfig fields that a config's model section may leave out, and the value they then take.
# configs/cnx2rg.py has none of them, so none of its configs (nor any DIR/config.json of its runs)
# holds them; configs/r2gen.py sets the R2Gen ones for R2Gen's own checkpoints. Every other field
# comes from the section (configs/cnx2rg.py gives each its default), vocab_size and max_len from
# the caller.
OPTIONAL_MODEL_KEYS = {
    "num_keywords": len(keywords.KEYWORDS),  # the keyword head: the paper's 48 keywords
    "num_views": 1,  # images a study (R2Gen's IU X-Ray model: 2)
    "r2gen_layernorm": False,  # R2Gen's quirks, all off (models/config.py says what each does)
    "r2gen_rgb_stem": False,
    "r2gen_beam_search": False,
}


def model_config(model_section, *, vocab_size: int, max_len: int) -> ModelConfig:
  """`config.model` (a ConfigDict) -> ModelConfig; an unknown or missing key raises, naming it.

  The section must hold every ModelConfig field but vocab_size, max_len (given) and
  OPTIONAL_MODEL_KEYS (absent: their values there)."""
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  values = {**OPTIONAL_MODEL_KEYS, **dict(model_section)}
  unknown = set(values) - fields
  if unknown:
    raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(fields)}")
  if "architecture" in values and values["architecture"] not in ARCHITECTURES:
    raise ConfigError(f"model.architecture={values['architecture']!r}; choose one of "
                      f"{sorted(ARCHITECTURES)}")
  missing = fields - set(values) - {"vocab_size", "max_len"}
  if missing:
    raise ConfigError(f"the model config lacks keys {sorted(missing)}; configs/cnx2rg.py gives "
                      "every one its default")
  return ModelConfig(vocab_size=vocab_size, max_len=max_len, **values)


def model_of(mcfg: ModelConfig, **kwargs) -> CNX2RG:
  """The module of `mcfg.architecture` (CNX2RG or CMNModel), given `kwargs` (e.g.
  image_normalization)."""
  return ARCHITECTURES[mcfg.architecture](mcfg, **kwargs)


def build_model(config, vocab_size: int) -> CNX2RG:
  """The model of a whole config (`config.model` dims and architecture, `config.data.max_tokens`
  positions, `config.data.normalization` for the frozen prompt encoder's input)."""
  return model_of(model_config(config.model, vocab_size=vocab_size,
                               max_len=config.data.max_tokens),
                  image_normalization=config.data.normalization)


def random_variables(model: CNX2RG, image_size: int, seed: int = 0):
  """Random weights by shape, without compiling `init` (slow for a ResNet-101 on a CPU).

  Parameters ~ N(0, 0.02), BatchNorm statistics mean 0 and variance 1: for speed measurements,
  where the values do not matter but the shapes and dtypes do.
  """
  images = jax.ShapeDtypeStruct(model.config.image_shape(1, image_size), np.float32)
  tokens = jax.ShapeDtypeStruct((1, 2), np.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images, tokens)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      value = np.ones(leaf.shape) if name.endswith("['var']") else np.zeros(leaf.shape)
    else:
      value = rng.normal(0.0, 0.02, leaf.shape)
    return np.asarray(value, leaf.dtype)

  # On the device once: numpy leaves would be copied host->device at every jitted call.
  return jax.device_put(jax.tree_util.tree_map_with_path(fill, shapes))
