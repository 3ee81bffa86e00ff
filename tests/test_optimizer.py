"""The optimizer against torch: clip_grad_value_, Adam (AMSGrad on/off) with two param groups and
weight decay, StepLR per epoch; the schedules; the parameter groups."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cnx2rg_jax.training import optimizer

STEPS, STEPS_PER_EPOCH = 12, 4
# Torch runs in float64 from the same float32 start, JAX in float32. Parameters (~1) carry float32
# rounding (~6e-8 a step, ~3e-7 seen after 12). Updates are lr (1e-4) times an Adam direction that
# float32 gets to ~1e-6 relative of its parts; where the first moment has cancelled (tiny updates)
# that is ~1e-10 absolute, hence atol (seen: 5e-6 relative, 2e-11 absolute at worst).
PARAM_TOL = dict(rtol=1e-5, atol=1e-7)
UPDATE_TOL = dict(rtol=1e-5, atol=1e-10)


def _config(**overrides) -> ml_collections.ConfigDict:
  c = dict(lr_visual=5e-5, lr_rest=1e-4, lr_schedule="step", lr_step_epochs=1, lr_gamma=0.8,
           lr_end_fraction=0.0, warmup_steps=0, num_steps=STEPS, weight_decay=5e-5,
           clip_value=0.1, amsgrad=True, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def _problem(seed=0):
  """float32 params and STEPS gradient trees: magnitudes from 1e-6 to 1, so clipping at 0.1
  bites and some second moments fall (AMSGrad's max matters)."""
  rng = np.random.default_rng(seed)
  shapes = {"visual": {"w": (3, 4)}, "transformer": {"w": (4, 2), "b": (2,)}}
  params = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))

  def grad(p):
    scale = 10.0 ** rng.uniform(-6, 0, size=p.shape)
    return (rng.normal(size=p.shape) * scale).astype(np.float32)

  return params, [jax.tree.map(grad, params) for _ in range(STEPS)]


def _run_optax(tx, params, grads):
  """(params after each step, updates of each step), leaves stacked over steps; one jitted scan
  (cheaper than eager ops on a small CPU)."""
  def step(carry, g):
    p, state = carry
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    return (p, state), (p, u)

  run = jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[1])
  return jax.tree.map(np.asarray, run(params, jax.tree.map(lambda *g: np.stack(g), *grads)))


def _run_torch(tr, params, grads):
  """The same as `_run_optax` the R2Gen way, in float64, and the lr of each group and step."""
  torch = pytest.importorskip("torch")
  tensors = jax.tree.map(lambda x: torch.tensor(x, dtype=torch.float64, requires_grad=True),
                         params)
  opt = torch.optim.Adam([{"params": jax.tree.leaves(tensors["visual"]), "lr": tr.lr_visual},
                          {"params": jax.tree.leaves(tensors["transformer"]), "lr": tr.lr_rest}],
                         weight_decay=tr.weight_decay, amsgrad=tr.amsgrad,
                         betas=(tr.adam_b1, tr.adam_b2), eps=tr.adam_eps)
  sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tr.lr_step_epochs, gamma=tr.lr_gamma)
  leaves, treedef = jax.tree.flatten(tensors)
  trace, updates, lrs = [], [], {"visual": [], "rest": []}
  for i, g in enumerate(grads):
    before = [t.detach().clone() for t in leaves]
    for t, gl in zip(leaves, jax.tree.leaves(g)):
      t.grad = torch.tensor(gl, dtype=torch.float64)
    if tr.clip_value:
      torch.nn.utils.clip_grad_value_(leaves, tr.clip_value)
    lrs["visual"].append(opt.param_groups[0]["lr"])
    lrs["rest"].append(opt.param_groups[1]["lr"])
    opt.step()
    if (i + 1) % STEPS_PER_EPOCH == 0:
      sched.step()
    trace.append([t.detach().numpy().copy() for t in leaves])  # .numpy() is a view
    updates.append([t.detach().numpy() - b.numpy() for t, b in zip(leaves, before)])

  def stack(xs):
    return jax.tree.unflatten(treedef, [np.stack(x) for x in zip(*xs)])

  return stack(trace), stack(updates), lrs


@functools.lru_cache
def _both(amsgrad, clip_value, weight_decay, betas=(0.9, 0.999), eps=1e-8):
  """(optax, torch) runs of `_problem()` under `_config(...)`."""
  tr = _config(amsgrad=amsgrad, clip_value=clip_value, weight_decay=weight_decay,
               adam_b1=betas[0], adam_b2=betas[1], adam_eps=eps)
  params, grads = _problem()
  tx, schedules = optimizer.make_optimizer(tr, STEPS_PER_EPOCH)
  lrs = {k: np.asarray(s(jnp.arange(STEPS))) for k, s in schedules.items()}
  return (*_run_optax(tx, params, grads), lrs), _run_torch(tr, params, grads)


def _assert_close(actual, expected, tol, what):
  for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    for step, (a_t, e_t) in enumerate(zip(a, e)):
      np.testing.assert_allclose(np.float64(a_t), e_t, **tol,
                                 err_msg=f"{what} {jax.tree_util.keystr(path)}, step {step + 1}")


@pytest.mark.parametrize("amsgrad", [True, False])
@pytest.mark.parametrize("clip_value,weight_decay", [(0.1, 5e-5), (0.0, 0.0)])
@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.9, 0.98), 1e-9)])  # R2Gen, R2GenCMN
def test_matches_torch(amsgrad, clip_value, weight_decay, betas, eps):
  (params, updates, lrs), (want_params, want_updates, want_lrs) = _both(
      amsgrad, clip_value, weight_decay, betas, eps)
  if clip_value:
    assert max(np.abs(g).max() for g in jax.tree.leaves(_problem()[1])) > clip_value
  _assert_close(params, want_params, PARAM_TOL, "params")
  _assert_close(updates, want_updates, UPDATE_TOL, "update")
  for group in optimizer.GROUPS:
    np.testing.assert_allclose(lrs[group], want_lrs[group], rtol=1e-6)
  # StepLR decayed twice in 12 steps of 4 per epoch.
  assert want_lrs["rest"][-1] == pytest.approx(1e-4 * 0.8 ** 2)


def test_amsgrad_is_torchs():
  """The comparison tells AMSGrad on from off, and torch's AMSGrad from optax's (first epoch,
  constant lr)."""
  want = _both(True, 0.1, 5e-5)[1][1]["transformer"]  # as test_matches_torch calls it (cached)
  plain = _both(False, 0.1, 5e-5)[1][1]["transformer"]
  params, grads = _problem()
  tx = optax.chain(optax.clip(0.1), optax.add_decayed_weights(5e-5), optax.scale_by_amsgrad(),
                   optax.scale(-1e-4))
  optax_ams = _run_optax(tx, params["transformer"],
                         [g["transformer"] for g in grads[:STEPS_PER_EPOCH]])[1]

  def differs(a, b):
    return any(not np.allclose(x[:STEPS_PER_EPOCH], y[:STEPS_PER_EPOCH], **UPDATE_TOL)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert differs(want, plain)
  assert differs(want, optax_ams)


def test_scale_by_torch_adam_state():
  params = _problem()[0]
  for amsgrad in (True, False):
    tx = optimizer.scale_by_torch_adam(amsgrad=amsgrad)
    state = jax.eval_shape(lambda p, tx=tx: tx.update(p, tx.init(p))[1], params)
    assert isinstance(state, optimizer.ScaleByTorchAdamState)
    assert jax.tree.structure(state.mu) == jax.tree.structure(params)
    assert (jax.tree.structure(state.nu_max) == jax.tree.structure(params)) == amsgrad
    assert state.count.shape == () and state.count.dtype == jnp.int32


def test_step_schedule_is_steplr():
  torch = pytest.importorskip("torch")
  tr = _config(lr_step_epochs=2, lr_gamma=0.5, num_steps=30)
  steps_per_epoch = 3
  sched = optimizer.schedule(1e-4, tr, steps_per_epoch)
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-4)
  step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=tr.lr_step_epochs, gamma=tr.lr_gamma)
  want = []
  for _ in range(tr.num_steps // steps_per_epoch):
    want += [opt.param_groups[0]["lr"]] * steps_per_epoch
    opt.step()
    step_lr.step()
  got = sched(jnp.arange(tr.num_steps))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cosine_schedule_with_warmup():
  peak, warmup, num_steps, end = 2e-4, 5, 25, 0.1
  tr = _config(lr_schedule="cosine", warmup_steps=warmup, num_steps=num_steps,
               lr_end_fraction=end)
  sched = optimizer.schedule(peak, tr, 4)
  steps = np.arange(num_steps + 5)
  t = np.clip(steps - warmup, 0, num_steps - warmup) / (num_steps - warmup)
  cosine = peak * (end + (1 - end) * 0.5 * (1 + np.cos(math.pi * t)))
  want = np.where(steps < warmup, peak * steps / warmup, cosine)
  np.testing.assert_allclose(sched(jnp.asarray(steps)), want, rtol=1e-5, atol=1e-12)


def test_constant_schedule():
  sched = optimizer.schedule(3e-4, _config(lr_schedule="constant"), 4)
  np.testing.assert_allclose(sched(jnp.arange(0, 100, 7)), 3e-4, rtol=1e-6)


def test_bad_schedule_name():
  with pytest.raises(ValueError, match="'linear'"):
    optimizer.schedule(1e-4, _config(lr_schedule="linear"), 4)
  with pytest.raises(ValueError, match="'linear'"):
    optimizer.make_optimizer(_config(lr_schedule="linear"), 4)


def test_param_groups():
  params, _ = _problem()
  params["prompt"] = {"visual": np.zeros(2)}  # 'visual' below the top does not count
  assert optimizer.param_groups(params) == {
      "visual": {"w": "visual"},
      "transformer": {"w": "rest", "b": "rest"},
      "prompt": {"visual": "rest"}}
  # Non-dict trees, as optax may pass: lists, bare leaves, masked placeholders.
  assert optimizer.param_groups([np.zeros(1), (np.zeros(2),)]) == ["rest", ("rest",)]
  assert optimizer.param_groups(np.zeros(3)) == "rest"
  masked = {"visual": optax.MaskedNode(), "rest": np.zeros(1)}
  assert optimizer.param_groups(masked) == {"visual": optax.MaskedNode(), "rest": "rest"}
