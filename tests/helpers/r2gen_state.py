"""A random R2Gen state dict with R2Gen's tensor names and shapes, for the converter's tests
without torch or R2Gen (tests/test_r2gen_convert.py, tests/test_two_views.py)."""

from __future__ import annotations

import numpy as np

from cnx2rg_jax.models import convert_torchvision as conv_tv

ED = "encoder_decoder."
D, D_FF, SLOTS, D_VF = 16, 24, 2, 512


def _visual(rng) -> dict:
  """torchvision ResNet-18 tensors under R2Gen's nn.Sequential names (random values)."""
  out = {}
  child = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
  for col, shapes in conv_tv.expected_shapes(18, in_channels=3).items():
    for path, shape in shapes.items():
      if len(path) == 2:  # the stem: Sequential positions 0 (conv1) and 1 (bn1)
        prefix, leaf = child[path[0]], path[1]
      else:
        stage, block = path[0].split("_")
        module = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(
            path[1], path[1])
        prefix, leaf = f"{child[stage]}.{block}.{module}", path[2]
      field = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}[leaf]
      if leaf == "kernel":
        shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
      name = f"visual_extractor.model.{prefix}.{field}"
      out[name] = rng.normal(size=shape).astype(np.float32)
      if field == "running_var":
        out[name] = np.abs(out[name]) + 0.5
        out[name.replace("running_var", "num_batches_tracked")] = np.zeros((), np.float32)
  return out


def _linear(sd, rng, name, out_f, in_f):
  sd[name + ".weight"] = rng.normal(size=(out_f, in_f)).astype(np.float32)
  sd[name + ".bias"] = rng.normal(size=(out_f,)).astype(np.float32)


def _layers(sd, rng, layers: int, norm_fields: tuple, decoder_norm=None) -> None:
  """The encoder's and decoder's `layers` layers and final norms (`norm_fields`: the names of a
  LayerNorm's scale and bias); `decoder_norm(prefix)` adds to each decoder norm."""
  scale, bias = norm_fields
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
        sd[f"{base}sublayer.{s}.norm.{scale}"] = rng.normal(size=(D,)).astype(np.float32)
        sd[f"{base}sublayer.{s}.norm.{bias}"] = rng.normal(size=(D,)).astype(np.float32)
        if part == "decoder" and decoder_norm is not None:
          decoder_norm(f"{base}sublayer.{s}.norm.")
    sd[f"{ED}model.{part}.norm.{scale}"] = rng.normal(size=(D,)).astype(np.float32)
    sd[f"{ED}model.{part}.norm.{bias}"] = rng.normal(size=(D,)).astype(np.float32)


def r2gen_state_dict(rows: int, layers: int = 1, seed: int = 0) -> dict:
  """A random state dict with R2Gen's names and shapes (ResNet-18, d 16, d_ff 24, 2 slots)."""
  rng = np.random.default_rng(seed)
  sd = _visual(rng)
  _linear(sd, rng, ED + "att_embed.0", D, D_VF)
  _linear(sd, rng, ED + "logit", rows, D)
  sd[ED + "model.tgt_embed.0.lut.weight"] = rng.normal(size=(rows, D)).astype(np.float32)
  from cnx2rg_jax.models.layers import sinusoidal_positions  # pylint: disable=import-outside-toplevel
  sd[ED + "model.tgt_embed.1.pe"] = np.asarray(sinusoidal_positions(300, D))[None]

  def mcln(norm: str) -> None:  # a decoder norm's MLPs from the relational memory
    for mlp in ("mlp_gamma", "mlp_beta"):
      _linear(sd, rng, f"{norm}{mlp}.0", D, SLOTS * D)
      _linear(sd, rng, f"{norm}{mlp}.2", D, D)

  _layers(sd, rng, layers, ("gamma", "beta"), mcln)
  for j in range(4):
    _linear(sd, rng, f"{ED}model.rm.attn.linears.{j}", D, D)
  _linear(sd, rng, ED + "model.rm.mlp.0", D, D)
  _linear(sd, rng, ED + "model.rm.mlp.2", D, D)
  _linear(sd, rng, ED + "model.rm.W", 2 * D, D)
  _linear(sd, rng, ED + "model.rm.U", 2 * D, D)
  return sd
