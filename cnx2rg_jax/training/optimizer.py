"""R2Gen's optimizer in Optax: two learning rates, Adam with AMSGrad, L2 weight decay, value clip.

R2Gen (Chen et al. 2020) trains with torch.optim.Adam(amsgrad=True, weight_decay=5e-5), 5e-5 for
the visual extractor and 1e-4 for the rest, a StepLR decay per epoch, and clips gradients by value
at 0.1 before each step. Here:

    clip(train.clip_value)                      torch's clip_grad_value_, before the step
    -> add_decayed_weights(train.weight_decay)  torch Adam's weight_decay adds wd * p to the grad
    -> scale_by_torch_adam(amsgrad=...)         torch Adam's direction (train.amsgrad switches;
                                                betas train.adam_b1/b2, eps train.adam_eps)
    -> scale_by_learning_rate(schedule)         one schedule per group, optax.multi_transform

Groups: 'visual' is the ResNet (params['visual']); 'rest' is everything else (prompt fusion,
keyword head, Transformer); 'frozen' is the frozen prompt encoder (params['prompt_encoder'],
MedCLIP's vision tower), whose updates are set to zero (optax.set_to_zero: no weight decay, no
Adam state, the parameters stay bit-identical). The 'frozen' group is only built when the
parameters have one, so the optimizer state of a run without it keeps its earlier layout and
its checkpoints still restore. Schedules are Optax's, in optimizer steps:
* 'step': staircase exponential decay by train.lr_gamma every train.lr_step_epochs epochs
  (R2Gen's StepLR; IU X-Ray 50 epochs x 0.1, MIMIC-CXR 1 x 0.8);
* 'cosine': cosine decay to train.lr_end_fraction of the peak;
* 'constant'.
Each may start with train.warmup_steps of linear warmup from 0.

The Adam step is `scale_by_torch_adam`, torch.optim.Adam's update in Optax. optax.scale_by_amsgrad
is not: it keeps the maximum of the bias-corrected second moment, torch the maximum of the raw one,
bias-corrected afterwards (sqrt(max v) / sqrt(1 - b2^t) + eps), so early steps differ.
tests/test_optimizer.py runs the whole chain and torch (clip_grad_value_, Adam with two param
groups, weight decay, AMSGrad on and off, StepLR stepped per epoch) side by side for 12 steps:
parameters and per-step updates agree to float32 rounding, and optax's AMSGrad is told apart.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

GROUPS = ("visual", "rest")  # the trained groups, each with its learning rate
FROZEN = "frozen"  # params[FROZEN_PARAMS]: never updated
FROZEN_PARAMS = "prompt_encoder"
SCHEDULES = ("step", "cosine", "constant")


class ScaleByTorchAdamState(NamedTuple):
  count: jax.Array  # int32 scalar: steps taken
  mu: Any  # first moment (torch's exp_avg)
  nu: Any  # raw second moment (exp_avg_sq)
  nu_max: Any  # running max of nu (max_exp_avg_sq); () without AMSGrad


def _bias_correction(decay: float, count: jax.Array) -> jax.Array:
  """1 - decay**count as -expm1(count log decay); 1 - float32(0.999)**t is ~1e-5 off relative."""
  log = math.log(decay) if decay > 0 else -math.inf
  return -jnp.expm1(count.astype(jnp.float32) * log)


def scale_by_torch_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                        amsgrad: bool = True) -> optax.GradientTransformation:
  """torch.optim.Adam's step before its -lr: with c1 = 1 - b1^t and c2 = 1 - b2^t,
  (mu / c1) / (sqrt(v) / sqrt(c2) + eps), v being nu or, with AMSGrad, nu's maximum so far.
  (Torch's weight_decay is optax.add_decayed_weights before this.)"""

  def init_fn(params):
    zeros = optax.tree_utils.tree_zeros_like
    return ScaleByTorchAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(params),
                                 nu=zeros(params), nu_max=zeros(params) if amsgrad else ())

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
    nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else ()
    count = optax.safe_increment(state.count)
    c1, c2 = _bias_correction(b1, count), _bias_correction(b2, count)

    def step(m, v):
      return (m / c1.astype(m.dtype)) / (jnp.sqrt(v) / jnp.sqrt(c2).astype(v.dtype) + eps)

    updates = jax.tree.map(step, mu, nu_max if amsgrad else nu)
    return updates, ScaleByTorchAdamState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def param_groups(params) -> dict:
  """A tree like `params` of group names: 'visual' under params['visual'], 'frozen' under
  params['prompt_encoder'], else 'rest'."""
  def group(path, _):
    top = getattr(path[0], "key", None) if path else None
    return {"visual": "visual", FROZEN_PARAMS: FROZEN}.get(top, "rest")
  return jax.tree_util.tree_map_with_path(group, params)


def _multi_transform(transforms: dict[str, optax.GradientTransformation]
                     ) -> optax.GradientTransformation:
  """optax.multi_transform over `param_groups`, with the 'frozen' group (optax.set_to_zero) added
  only for parameter trees that have frozen parameters: the group set is read from the tree's
  structure, which init and update see alike."""
  def build(tree) -> optax.GradientTransformation:
    groups = dict(transforms)
    if FROZEN in jax.tree.leaves(param_groups(tree)):
      groups[FROZEN] = optax.set_to_zero()
    return optax.multi_transform(groups, param_groups)

  def init_fn(params):
    return build(params).init(params)

  def update_fn(updates, state, params=None):
    return build(updates).update(updates, state, params)

  return optax.GradientTransformation(init_fn, update_fn)


def schedule(peak: float, tr, steps_per_epoch: int) -> optax.Schedule:
  """The learning-rate schedule of one group (see the module doc)."""
  warmup = int(tr.warmup_steps)
  total = max(int(tr.num_steps) - warmup, 1)
  if tr.lr_schedule == "step":
    main = optax.exponential_decay(peak, transition_steps=max(1, tr.lr_step_epochs
                                                              * steps_per_epoch),
                                   decay_rate=tr.lr_gamma, staircase=True)
  elif tr.lr_schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, total, alpha=tr.lr_end_fraction)
  elif tr.lr_schedule == "constant":
    main = optax.constant_schedule(peak)
  else:
    raise ValueError(f"train.lr_schedule={tr.lr_schedule!r}; use one of {SCHEDULES}")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _group(lr: optax.Schedule, tr) -> optax.GradientTransformation:
  scale = scale_by_torch_adam(b1=tr.adam_b1, b2=tr.adam_b2, eps=tr.adam_eps,
                              amsgrad=bool(tr.amsgrad))
  parts = []
  if tr.weight_decay:
    parts.append(optax.add_decayed_weights(tr.weight_decay))
  return optax.chain(*parts, scale, optax.scale_by_learning_rate(lr))


def make_optimizer(tr, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """(optimizer, {group: schedule}) from the config's `train` section."""
  schedules = {"visual": schedule(tr.lr_visual, tr, steps_per_epoch),
               "rest": schedule(tr.lr_rest, tr, steps_per_epoch)}
  parts = []
  if tr.clip_value:
    parts.append(optax.clip(tr.clip_value))
  parts.append(_multi_transform({g: _group(schedules[g], tr) for g in GROUPS}))
  return optax.chain(*parts), schedules
