"""Device mesh, logical axis rules, and placing batches and parameters on the mesh.

The config's `mesh.shape` and `mesh.axes` name the mesh (default: every device on one 'data'
axis), and `mesh.strategy` says how parameters are laid out on it. Parameters carry logical axis
names (see models/layers.py and models/resnet.py); the strategy's rules map them to mesh axes:

* always 'batch' -> 'data': examples are split over the data axis;
* "data": nothing else; every parameter is replicated (plain data parallelism);
* "tensor": 'vocab', 'mlp', 'joined_kv' -> 'model': the Transformer's large matrices (the logit
  layer, feed-forward, MCLN and attention projections) are split over the model axis. The ResNet
  stays replicated: splitting its output channels ('conv_out' -> 'model') put the stem
  convolution's kernel 1.7e-3 off the one-device run after two SGD steps on a (1, 8) mesh at a
  large learning rate (see tests/helpers/sharded_step.py on why that was rounding);
* "fsdp": 'embed', 'visual', 'conv_out' and 'rm_flat' -> 'data': every large parameter (the ResNet
  included) and its optimizer state are split over the data axis and gathered where used;
* "fsdp_tensor": both, on a ('data', 'model') mesh.

On a mesh without the 'model' axis "tensor" is "data", so the default ("tensor") is data
parallelism on the default mesh and tensor parallelism once a 'model' axis is added. A rule whose
mesh axis is not in the mesh is dropped, and a dimension that the mesh axis does not divide is
replicated instead of split. `check_replication` stops a run whose strategy asks for split
parameters but leaves more than `mesh.max_replicated_fraction` of the parameter bytes whole.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnx2rg_jax.errors import UserError

DATA_AXIS, MODEL_AXIS = "data", "model"
TENSOR_RULES = (("vocab", MODEL_AXIS), ("mlp", MODEL_AXIS), ("joined_kv", MODEL_AXIS))
FSDP_RULES = (("embed", DATA_AXIS), ("visual", DATA_AXIS), ("conv_out", DATA_AXIS),
              ("rm_flat", DATA_AXIS))
STRATEGIES = {
    "data": (),
    "tensor": TENSOR_RULES,
    "fsdp": FSDP_RULES,
    "fsdp_tensor": TENSOR_RULES + FSDP_RULES,
}
LOGICAL_RULES = (("batch", DATA_AXIS),) + TENSOR_RULES  # the default strategy's ("tensor")


class MeshConfigError(UserError):
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


def rules_for(mesh, strategy: str = "tensor") -> tuple[tuple[str, Any], ...]:
  """The logical axis rules of `strategy` (see STRATEGIES), restricted to the mesh's axes."""
  if strategy not in STRATEGIES:
    raise MeshConfigError(f"mesh.strategy={strategy!r}; choose one of {', '.join(STRATEGIES)}")
  rules = (("batch", DATA_AXIS),) + STRATEGIES[strategy]
  return tuple((name, axis if axis in mesh.axis_names else None) for name, axis in rules)


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


def logical_shardings(boxed_abstract: Any, mesh, strategy: str = "tensor") -> Any:
  """NamedShardings for an eval_shape'd tree whose leaves may be nn.Partitioned boxes, laid out
  by `strategy`. `mesh` may be an AbstractMesh (for layouts of devices one does not have).

  The result has the structure of the *unboxed* tree.
  """
  specs = nn.get_partition_spec(boxed_abstract)
  mesh_specs = nn.logical_to_mesh(specs, rules_for(mesh, strategy))
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


class ReplicationError(MeshConfigError):
  """A strategy that asks for split parameters but leaves most of them whole."""


def _split_axes(strategy: str) -> set[str]:
  return {axis for _, axis in STRATEGIES[strategy]}


def replicated_fraction(abstract_params: Any, shardings: Any) -> tuple[float, list[tuple[str, int]]]:
  """(share of parameter bytes that every device holds whole, those leaves as (path, bytes),
  largest first)."""
  total, whole = 0, []
  flat_p = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat_s = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), sh in zip(flat_p, flat_s):
    size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    total += size
    if tuple(sh.shard_shape(leaf.shape)) == tuple(leaf.shape):
      whole.append((jax.tree_util.keystr(path), size))
  whole.sort(key=lambda x: -x[1])
  return (sum(b for _, b in whole) / total if total else 0.0), whole


def check_replication(abstract_params: Any, shardings: Any, mesh, strategy: str,
                      max_fraction: float) -> Optional[float]:
  """Raises ReplicationError when `strategy` splits parameters over mesh axes of more than one
  device, yet more than `max_fraction` of the parameter bytes stays whole on every device.
  Returns the replicated fraction (None when the strategy splits nothing on this mesh)."""
  axes = {a for a in _split_axes(strategy) if a in mesh.axis_names and mesh.shape[a] > 1}
  if not axes:
    return None
  fraction, whole = replicated_fraction(abstract_params, shardings)
  if fraction > max_fraction:
    top = ", ".join(f"{p} ({b / 2**20:.1f} MiB)" for p, b in whole[:3])
    raise ReplicationError(
        f"mesh.strategy={strategy!r} on mesh {dict(mesh.shape)} leaves {fraction:.0%} of the "
        f"parameter bytes replicated on every device (mesh.max_replicated_fraction="
        f"{max_fraction}); the largest: {top}. Use mesh.strategy=fsdp or fsdp_tensor to split "
        "them over the data axis, make the mesh axes divide the parameter dimensions, or raise "
        "mesh.max_replicated_fraction if this is intended")
  return fraction
