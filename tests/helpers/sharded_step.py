"""Two train steps of a small CN-X2RG on a (4, 2) data x model mesh and on one device.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 and the sharding strategies to try
as arguments (default "tensor"); prints one JSON line, per strategy: the losses, the largest
parameter difference beyond rtol 1e-5 (worst first), how far the parameters moved, each
parameter's PartitionSpec and per-device shard shape on the mesh, and the train-state bytes the
first device holds beside what training.memory_plan plans for it.

The optimizer here is plain SGD: it maps gradients to updates linearly, so equal gradients give
equal parameters. (Adam's first steps are sign(g) * lr: a gradient element that is zero up to
rounding can flip sign between two summation orders and move the parameter by 2 lr; that says
nothing about the sharding.) The step function, state creation and shardings are the real ones.
"""

import json
import sys

import jax
import numpy as np
import optax
from jax.sharding import AbstractMesh

from cnx2rg_jax import sharding
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training import memory_plan, state as state_lib, steps
from tests.helpers.model_configs import model_config_with

B, S, T, V = 8, 32, 12, 48
# Small enough that step 1 leaves the network well conditioned. At 0.05 the two meshes' ResNet
# kernels differed by up to 1.8e-3 after step 2 although both losses agreed to 1e-7 and step 1
# matched (measured). The differences shrank to 1.2e-6 with dropout off and to 2e-5 without the
# keyword loss, and vanish at 0.005: summation-order rounding magnified by a network that one
# large SGD step left ill-conditioned (our reading: BatchNorm backward divides by small channel
# variances), not a sharding error. At 0.005 both steps match at rtol 1e-5.
LR = 0.005


def run(mesh, strategy="tensor"):
  cfg = model_config_with(vocab_size=V, max_len=T, resnet_depth=18, d_model=64, d_ff=128,
                          num_heads=4, num_encoder_layers=1, num_decoder_layers=1, rm_num_slots=2,
                          rm_num_heads=4, rm_d_model=64, dropout=0.1)
  model = CNX2RG(cfg)
  tx = optax.sgd(LR)
  state, shardings = state_lib.create_state(model, tx, mesh, image_size=S, num_tokens=T - 1,
                                            seed=0, strategy=strategy)
  init_params = jax.device_get(state.params)
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, V, (B, T)).astype(np.int32)
  tokens[:, 0] = 1
  mask = np.ones((B, T), np.int32)
  mask[:, 9:] = 0
  local = {"image": rng.normal(size=(B, S, S, 1)).astype(np.float32), "report_tokens": tokens,
           "report_mask": mask,
           "keyword_labels": rng.choice([-2, -1, 0, 1], (B, 48)).astype(np.int8),
           "has_keyword_labels": np.arange(B) % 3 != 2}
  batch = sharding.global_batch(local, mesh)
  step = steps.make_train_step(model, tx, mesh, shardings,
                               {k: v.shape for k, v in local.items()}, keyword_weight=0.5,
                               dropout_seed=1, lr_fn=lambda _: LR)
  losses, params = [], []
  for _ in range(2):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    params.append(jax.device_get(state.params))
  # What training.memory_plan expects a device to hold, from an AbstractMesh of this shape.
  abstract_mesh = AbstractMesh(tuple(mesh.shape.values()), mesh.axis_names)
  planned, _, _ = state_lib.abstract_state(model, tx, abstract_mesh, image_size=S,
                                           num_tokens=T - 1, strategy=strategy)
  return state, losses, init_params, params, memory_plan.per_device_bytes(planned)


def _worst(a_tree, b_tree):
  """(|a - b| - 1e-5 |b| - 1e-6, path) of each parameter, worst first: > 0 fails rtol 1e-5
  with atol 1e-6."""
  out = []
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(a_tree), jax.tree.leaves(b_tree)):
    a, b = np.asarray(a), np.asarray(b)
    out.append((float((np.abs(a - b) - 1e-5 * np.abs(b) - 1e-6).max()),
                jax.tree_util.keystr(path)))
  return sorted(out, reverse=True)


def _device0_bytes(state) -> int:
  """Bytes of the train state that the first device really holds."""
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state))


def main():
  assert len(jax.devices()) == 8, jax.devices()
  _, l_one, p0, p_one, _ = run(sharding.make_mesh((1,), ("data",), jax.devices()[:1]))
  moved = max(float(np.abs(np.asarray(b) - np.asarray(c)).max())
              for b, c in zip(jax.tree.leaves(p_one[0]), jax.tree.leaves(p0)))
  out = {}
  for strategy in sys.argv[1:] or ["tensor"]:
    mesh = sharding.make_mesh((4, 2), ("data", "model"))
    s_mesh, l_mesh, _, p_mesh, planned = run(mesh, strategy)
    leaves = jax.tree_util.tree_leaves_with_path(s_mesh.params)
    out[strategy] = {
        "loss_mesh": l_mesh, "loss_one": l_one, "moved": moved,
        "worst": [_worst(a, b)[:5] for a, b in zip(p_mesh, p_one)],
        "spec": {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in leaves},
        "shard": {jax.tree_util.keystr(p): [list(x.addressable_shards[0].data.shape),
                                            list(x.shape)] for p, x in leaves},
        "device0_bytes": _device0_bytes(s_mesh),
        "planned_bytes": planned}
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
