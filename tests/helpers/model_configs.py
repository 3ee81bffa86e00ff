"""Model configs for tests that build a model by hand: the config files' defaults with a test's
overrides, built as every run builds them (the dataclasses have no defaults of their own)."""

from __future__ import annotations

from cnx2rg_jax.models import factory
from cnx2rg_jax.radgraph.model import RadGraphConfig
from cnx2rg_jax.models.config import ModelConfig
from configs import cn_radgraph, cnx2rg


def model_config_with(*, vocab_size: int, max_len: int | None = None,
                      **fields) -> ModelConfig:
  """configs/cnx2rg.py's model defaults (R2Gen's / the paper's dims, before any variant) with
  `fields` (any ModelConfig field); max_len defaults to data.max_tokens (100)."""
  c = cnx2rg.defaults()
  return factory.model_config({**c.model.to_dict(), **fields}, vocab_size=vocab_size,
                              max_len=c.data.max_tokens if max_len is None else max_len)


def radgraph_config_with(*, vocab_size: int, **fields) -> RadGraphConfig:
  """configs/cn_radgraph.py's model defaults (its default variant) with `fields`."""
  return RadGraphConfig(vocab_size=vocab_size,
                        **{**cn_radgraph.get_config().model.to_dict(), **fields})
