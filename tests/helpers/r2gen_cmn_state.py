"""A random R2GenCMN state dict with its tensor names and shapes (as its BaseCMNModel saves them),
for the converter's tests without torch or R2GenCMN (tests/test_r2gen_cmn_convert.py)."""

from __future__ import annotations

import numpy as np

from tests.helpers.r2gen_state import D, D_FF, ED, D_VF  # noqa: F401 (D_FF: its tests read it)
from tests.helpers.r2gen_state import _layers, _linear, _visual  # pylint: disable=protected-access

CMM_SIZE = 40


def r2gen_cmn_state_dict(rows: int, layers: int = 1, seed: int = 0) -> dict:
  """ResNet-18, d 16, d_ff 24, a 40 x 16 memory; the memory maps saved twice (encoder_decoder.cmn
  and encoder_decoder.model.cmn are one module, registered under both names)."""
  rng = np.random.default_rng(seed)
  sd = _visual(rng)
  _linear(sd, rng, ED + "att_embed.0", D, D_VF)
  _linear(sd, rng, ED + "logit", rows, D)
  sd[ED + "memory_matrix"] = rng.normal(size=(CMM_SIZE, D)).astype(np.float32)
  for j in range(4):
    _linear(sd, rng, f"{ED}cmn.linears.{j}", D, D)
    for field in ("weight", "bias"):
      sd[f"{ED}model.cmn.linears.{j}.{field}"] = sd[f"{ED}cmn.linears.{j}.{field}"]
  sd[ED + "model.tgt_embed.0.lut.weight"] = rng.normal(size=(rows, D)).astype(np.float32)
  from cnx2rg_jax.models.layers import sinusoidal_positions  # pylint: disable=import-outside-toplevel
  pe = np.asarray(sinusoidal_positions(300, D))[None]
  sd[ED + "model.tgt_embed.1.pe"] = sd[ED + "model.src_embed.0.pe"] = pe
  _layers(sd, rng, layers, ("a_2", "b_2"))
  return sd
