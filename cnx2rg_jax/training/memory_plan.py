"""Parameter and optimizer-state memory per device under each sharding strategy.

Computed from shapes and shardings alone: the train state is `eval_shape`d and laid out on a
`jax.sharding.AbstractMesh` of any size, so it needs neither the devices nor the memory. It
counts the train state (parameters, BatchNorm statistics, optimizer state), not activations;
peak memory on a real device is what `scripts/gpu_bench.py` measures.

    strategy_memory(config, vocab_size, num_devices) -> [{"strategy", "mesh", "params_mib",
        "opt_state_mib", "state_mib", "replicated_fraction"}, ...]
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AbstractMesh

from cnx2rg_jax import sharding
from cnx2rg_jax.models import factory
from cnx2rg_jax.training import optimizer, state as state_lib

MIB = 2 ** 20


def mesh_for(strategy: str, num_devices: int) -> AbstractMesh:
  """The mesh a strategy is meant for: (N,) 'data'; with tensor parallelism (N/2, 2)."""
  if "tensor" in strategy and num_devices >= 2 and num_devices % 2 == 0:
    return AbstractMesh((num_devices // 2, 2), (sharding.DATA_AXIS, sharding.MODEL_AXIS))
  return AbstractMesh((num_devices,), (sharding.DATA_AXIS,))


def per_device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings: the largest shard
  of each leaf (uneven splits put the remainder on some devices)."""
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def strategy_memory(config, vocab_size: int, num_devices: int) -> list[dict]:
  """One entry a strategy of `sharding.STRATEGIES` for `config`'s model on `num_devices`."""
  model = factory.build_model(config, vocab_size)
  tx, _ = optimizer.make_optimizer(config.train, steps_per_epoch=1)  # shapes only
  sizes = {"image_size": config.data.crop_size, "num_tokens": config.data.max_tokens - 1}
  traced = state_lib.traced_shapes(model, tx, **sizes)  # once; only the layouts differ
  out = []
  for strategy in sharding.STRATEGIES:
    mesh = mesh_for(strategy, num_devices)
    abstract, shardings, _ = state_lib.abstract_state(model, tx, mesh, strategy=strategy,
                                                      traced=traced, **sizes)
    params = per_device_bytes(abstract.params)
    opt = per_device_bytes(abstract.opt_state)
    stats = per_device_bytes(abstract.batch_stats)
    fraction, _ = sharding.replicated_fraction(abstract.params, shardings.params)
    out.append({"strategy": strategy, "mesh": dict(mesh.shape),
                "params_mib": round(params / MIB, 2), "opt_state_mib": round(opt / MIB, 2),
                "state_mib": round((params + opt + stats) / MIB, 2),
                "replicated_fraction": round(fraction, 4)})
  return out
