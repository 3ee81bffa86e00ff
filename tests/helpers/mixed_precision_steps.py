"""20 Adam steps of a small CN-X2RG in float32 and in bfloat16 compute, on the same batches.

Prints one JSON line: per dtype the losses, the dtypes of the parameters and optimizer state
after training, and the dtype of the encoder memory (the activations). Run as a subprocess
with XLA_FLAGS=--xla_backend_optimization_level=0 (fast compiles for a few tiny steps).
"""

import json
import sys

import jax
import numpy as np
import optax

from cnx2rg_jax import sharding
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training import state as state_lib, steps
from tests.helpers.model_configs import model_config_with

B, S, T, V, STEPS, LR = 8, 32, 16, 48, 20, 1e-3


def batches(n: int) -> list[dict]:
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    tokens = rng.integers(4, V, (B, T)).astype(np.int32)
    tokens[:, 0] = 1
    mask = np.ones((B, T), np.int32)
    mask[:, 12:] = 0
    out.append({"image": rng.normal(size=(B, S, S, 1)).astype(np.float32),
                "report_tokens": tokens, "report_mask": mask,
                "keyword_labels": rng.choice([-2, -1, 0, 1], (B, 48)).astype(np.int8),
                "has_keyword_labels": np.ones((B,), bool)})
  return out


def run(dtype: str) -> dict:
  cfg = model_config_with(vocab_size=V, max_len=T, resnet_depth=18, resnet_width=8, d_model=32,
                          d_ff=64, num_heads=4, num_encoder_layers=1, num_decoder_layers=1,
                          rm_num_slots=2, rm_num_heads=4, rm_d_model=32, dropout=0.1, dtype=dtype)
  model = CNX2RG(cfg)
  tx = optax.adam(LR)
  mesh = sharding.make_mesh((1,), ("data",))
  state, shardings = state_lib.create_state(model, tx, mesh, image_size=S, num_tokens=T - 1,
                                            seed=0)
  data = batches(4)
  step = steps.make_train_step(model, tx, mesh, shardings,
                               {k: v.shape for k, v in data[0].items()}, keyword_weight=1.0,
                               dropout_seed=1, lr_fn=lambda _: LR)
  losses = []
  for i in range(STEPS):
    state, metrics = step(state, sharding.global_batch(data[i % len(data)], mesh))
    losses.append(float(metrics["loss"]))
  memory, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                          data[0]["image"], method=CNX2RG.encode)
  floats = lambda tree: sorted({str(x.dtype) for x in jax.tree.leaves(tree)  # noqa: E731
                                if np.issubdtype(x.dtype, np.floating)})
  return {"losses": losses, "param_dtypes": floats(state.params),
          "opt_state_dtypes": floats(state.opt_state), "activation_dtype": str(memory.dtype)}


def main() -> int:
  print(json.dumps({dtype: run(dtype) for dtype in ("float32", "bfloat16")}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
