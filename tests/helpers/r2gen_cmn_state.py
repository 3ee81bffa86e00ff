"""A random R2GenCMN state dict with its tensor names and shapes (as its BaseCMNModel saves them),
for the converter's tests without torch or R2GenCMN (tests/test_r2gen_cmn_convert.py)."""

from __future__ import annotations

import numpy as np

from tests.helpers.r2gen_state import D, D_FF, ED, D_VF
from tests.helpers.r2gen_state import _linear, _visual  # pylint: disable=protected-access

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
  for part, attns, norms in (("encoder", ("self_attn",), 2),
                             ("decoder", ("self_attn", "src_attn"), 3)):
    for i in range(layers):
      base = f"{ED}model.{part}.layers.{i}."
      for a in attns:
        for j in range(4):
          _linear(sd, rng, f"{base}{a}.linears.{j}", D, D)
      _linear(sd, rng, base + "feed_forward.w_1", D_FF, D)
      _linear(sd, rng, base + "feed_forward.w_2", D, D_FF)
      for s in range(norms):
        sd[f"{base}sublayer.{s}.norm.a_2"] = rng.normal(size=(D,)).astype(np.float32)
        sd[f"{base}sublayer.{s}.norm.b_2"] = rng.normal(size=(D,)).astype(np.float32)
    sd[f"{ED}model.{part}.norm.a_2"] = rng.normal(size=(D,)).astype(np.float32)
    sd[f"{ED}model.{part}.norm.b_2"] = rng.normal(size=(D,)).astype(np.float32)
  return sd
