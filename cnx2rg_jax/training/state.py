"""The train state, created directly into its shardings.

Shapes come first (`jax.eval_shape` of the model's init, which keeps the parameters' logical
axis names); `sharding.logical_shardings` turns those into NamedShardings on the mesh; the
optimizer state takes its parameters' shardings (`optax.tree_map_params`); then one jitted
init with those out_shardings creates every array where it lives, so no device ever holds the
whole unsharded model first.

A model with a frozen prompt encoder (`CNX2RG` with `config.prompt_encoder` set) gets its
variables params['prompt_encoder'] and batch_stats['prompt_encoder'] from the converted MedCLIP
directory instead of a random init (the init is then `model.apply(..., mutable=True)` with those
variables given, which draws every other parameter exactly as `model.init` does). The file is
checked (names, shapes) when the init is traced, and read on the host by a `jax.pure_callback`
when it runs: closed-over NumPy arrays would be baked into the compiled init as ~100 MB of
constants. A run resumed or evaluated from a checkpoint restores them from there like any other
parameter.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from cnx2rg_jax import sharding
from cnx2rg_jax.models import prompt_encoder
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training.optimizer import FROZEN_PARAMS as FROZEN


class TrainState(struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  batch_stats: Any  # BatchNorm running statistics ({} without BatchNorm)
  opt_state: Any


def _like_params(opt_state, params, param_shardings, default):
  """Shardings for an optimizer state: a leaf whose path ends with a parameter's path (Adam's
  mu['transformer']...['kernel']) and has its shape takes that parameter's sharding; others
  (step counts) get `default`. (optax.tree_map_params cannot see through multi_transform's
  masked states, hence the path match.)"""
  by_path = {jax.tree_util.keystr(p): (leaf.shape, sh) for (p, leaf), sh in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(param_shardings))}
  keys = sorted(by_path, key=len, reverse=True)

  def one(path, leaf):
    name = jax.tree_util.keystr(path)
    for key in keys:
      if name.endswith(key) and by_path[key][0] == leaf.shape:
        return by_path[key][1]
    return default

  return jax.tree_util.tree_map_with_path(one, opt_state)


def _frozen_prompt_encoder(model: nn.Module, abstract_variables) -> Optional[dict]:
  """{'params': {'prompt_encoder': ...}, 'batch_stats': {'prompt_encoder': ...}} from the
  converted directory, read on the host when the jitted init runs; None for a model without a
  frozen prompt encoder. Raises PromptEncoderError (when traced) for a directory that does not
  fit (`prompt_encoder.check_directory` reads the array headers only)."""
  if not (isinstance(model, CNX2RG) and model.config.prompt_encoder):
    return None
  directory = model.config.prompt_encoder
  prompt_encoder.check_directory(directory)
  shapes = {col: {FROZEN: nn.meta.unbox(abstract_variables[col][FROZEN])}
            for col in ("params", "batch_stats")}

  def read():
    loaded = prompt_encoder.load_variables(directory)
    return {col: {FROZEN: loaded[col]} for col in shapes}

  return jax.pure_callback(read, shapes)


def _dummy_inputs(model: nn.Module, image_size: int, num_tokens: int):
  return (jnp.zeros(model.config.image_shape(1, image_size), jnp.float32),
          jnp.zeros((1, num_tokens), jnp.int32))


def traced_shapes(model: nn.Module, tx: optax.GradientTransformation, *, image_size: int,
                  num_tokens: int) -> tuple[Any, TrainState, Any]:
  """(the model's abstract variables, the abstract TrainState, the init function of a PRNG
  key): the traces `abstract_state` lays out on a mesh, which do not depend on the mesh."""
  def init_variables(key):
    return model.init(key, *_dummy_inputs(model, image_size, num_tokens))

  key = jax.random.key(0)
  abstract_variables = jax.eval_shape(init_variables, key)

  def init_state(key):
    frozen = _frozen_prompt_encoder(model, abstract_variables)
    if frozen is None:
      variables = init_variables(key)
    else:  # init with the frozen variables given: only the others are drawn (same values)
      _, variables = model.apply(frozen, *_dummy_inputs(model, image_size, num_tokens),
                                 rngs={"params": key}, mutable=True)
    variables = nn.meta.unbox(variables)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

  return abstract_variables, jax.eval_shape(init_state, key), init_state


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, *,
                   image_size: int, num_tokens: int, strategy: str = "tensor",
                   traced: Optional[tuple] = None) -> tuple[TrainState, TrainState, Any]:
  """(abstract TrainState, its NamedShardings by `strategy` (sharding.STRATEGIES), the init
  function of a PRNG key). The optimizer state is laid out as the parameters it tracks.

  The abstract state's leaves are ShapeDtypeStructs carrying their shardings, as orbax's
  restore wants them. `traced`: `traced_shapes(...)` of the same model, optimizer and sizes,
  to lay one trace out on several meshes or strategies.
  """
  abstract_variables, shapes, init_state = traced or traced_shapes(
      model, tx, image_size=image_size, num_tokens=num_tokens)
  var_shardings = sharding.logical_shardings(abstract_variables, mesh, strategy)
  replicated = sharding.replicated(mesh)
  opt_shardings = _like_params(shapes.opt_state, shapes.params, var_shardings["params"],
                               replicated)
  shardings = TrainState(step=replicated, params=var_shardings["params"],
                         batch_stats=var_shardings.get("batch_stats", {}),
                         opt_state=opt_shardings)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  return abstract, shardings, init_state


def create_state(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, *,
                 image_size: int, num_tokens: int, seed: int, strategy: str = "tensor"
                 ) -> tuple[TrainState, TrainState]:
  """(initialised TrainState placed by its shardings, the shardings)."""
  _, shardings, init_state = abstract_state(model, tx, mesh, image_size=image_size,
                                            num_tokens=num_tokens, strategy=strategy)
  state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(seed))
  return state, shardings
