"""Device mesh, logical axis rules, and placing batches and parameters on the mesh.

The config's `mesh.shape` and `mesh.axes` name the mesh (default: every device on one 'data'
axis, i.e. data parallelism). Parameters carry logical axis names (see models/layers.py and
models/resnet.py); LOGICAL_RULES map them to mesh axes:

* 'batch' -> 'data': examples are split over the data axis;
* 'vocab', 'mlp', 'joined_kv' -> 'model': the Transformer's large matrices (the logit layer,
  feed-forward, MCLN and attention projections) are split over the model axis;
* everything else is replicated, the ResNet included: splitting its output channels ('conv_out'
  -> 'model') put the stem convolution's kernel 1.7e-3 off the one-device run after two SGD
  steps on a (1, 8) mesh, whatever the stem's own sharding, while every other parameter
  matched. Without it (1, 8) matches; (4, 2) still shows the stem off after step 2 (an open
  question, see tests/test_sharded_training.py).

A rule whose mesh axis is not in the mesh is dropped (so a data-only mesh replicates all
parameters), and a dimension that the mesh axis does not divide is replicated instead of split.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS, MODEL_AXIS = "data", "model"
LOGICAL_RULES = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("mlp", MODEL_AXIS),
    ("joined_kv", MODEL_AXIS),
)


class MeshConfigError(ValueError):
  """mesh.shape / mesh.axes that do not fit the devices."""


def make_mesh(shape: Sequence[int], axes: Sequence[str], devices=None) -> Mesh:
  """A Mesh of `devices` (default all) with `axes`; one -1 in `shape` takes the rest."""
  devices = list(jax.devices() if devices is None else devices)
  shape, axes = [int(s) for s in shape], [str(a) for a in axes]
  if len(shape) != len(axes):
    raise MeshConfigError(f"mesh.shape {shape} and mesh.axes {axes} differ in length")
  if DATA_AXIS not in axes:
    raise MeshConfigError(f"mesh.axes {axes} must include {DATA_AXIS!r} (batches split on it)")
  unknown = sorted(set(axes) - {DATA_AXIS, MODEL_AXIS})
  if unknown or len(set(axes)) != len(axes):
    raise MeshConfigError(f"mesh.axes {axes}: each of {DATA_AXIS!r}, {MODEL_AXIS!r} at most "
                          "once, and nothing else")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise MeshConfigError(f"mesh.shape {shape}: positive sizes and at most one -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise MeshConfigError(f"mesh.shape {shape} does not divide the {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise MeshConfigError(f"mesh.shape {shape} holds {int(np.prod(shape))} devices, but there "
                          f"are {len(devices)}; use -1 for the data axis to take the rest")
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), tuple(axes))


def mesh_from_config(mesh_section) -> Mesh:
  return make_mesh(mesh_section.shape, mesh_section.axes)


def rules_for(mesh: Mesh) -> tuple[tuple[str, Any], ...]:
  """LOGICAL_RULES restricted to the mesh's axes."""
  return tuple((name, axis if axis in mesh.axis_names else None)
               for name, axis in LOGICAL_RULES)


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh, where: str) -> PartitionSpec:
  """`spec` with every mesh axis that does not divide its dimension replaced by None."""
  out = []
  for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
    if size > 1 and dim % size:
      logging.info("replicating %s: dimension %d is not divisible by mesh axes %s", where, dim,
                   names)
      axis = None
    out.append(axis)
  return PartitionSpec(*out)


def logical_shardings(boxed_abstract: Any, mesh: Mesh) -> Any:
  """NamedShardings for an eval_shape'd tree whose leaves may be nn.Partitioned boxes.

  The result has the structure of the *unboxed* tree.
  """
  specs = nn.get_partition_spec(boxed_abstract)
  mesh_specs = nn.logical_to_mesh(specs, rules_for(mesh))
  shapes = nn.meta.unbox(boxed_abstract)

  def one(path, spec, leaf):
    spec = spec if isinstance(spec, PartitionSpec) else PartitionSpec()
    return NamedSharding(mesh, _fit(spec, leaf.shape, mesh, jax.tree_util.keystr(path)))

  return jax.tree_util.tree_map_with_path(
      one, mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (example) axis on 'data', the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, mesh: Mesh) -> dict:
  """This process's batch (numpy arrays; strings dropped) as global jax Arrays split on 'data'.

  Every process passes its own examples; the global batch is their concatenation in process
  order, so the global batch size is the per-process size times the number of processes.
  """
  out = {}
  for key, value in local.items():
    value = np.asarray(value)
    if value.dtype.kind in "OUS":
      continue
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
  return out
