"""Sharding strategies without devices: the replication check and the memory plan, on
AbstractMeshes of the tiny model (tests/test_sharded_training.py runs them on 8 CPU devices)."""

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from cnx2rg_jax import run, sharding
from cnx2rg_jax.models import factory
from cnx2rg_jax.training import memory_plan, optimizer, state as state_lib
from tests.conftest import tiny_model_config

TP_MESH = AbstractMesh((4, 2), ("data", "model"))
DP_MESH = AbstractMesh((8,), ("data",))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  config = tiny_model_config(str(tmp_path_factory.mktemp("unused")))
  model = factory.build_model(config, 64)
  tx, _ = optimizer.make_optimizer(config.train, steps_per_epoch=1)
  return config, model, tx


def _layout(tiny, mesh, strategy):
  config, model, tx = tiny
  abstract, shardings, _ = state_lib.abstract_state(
      model, tx, mesh, image_size=config.data.crop_size, num_tokens=config.data.max_tokens - 1,
      strategy=strategy)
  return abstract, shardings


def _brute_force_fraction(abstract_params):
  """Replicated share of parameter bytes, from each leaf's own shard shape."""
  whole = total = 0
  for leaf in jax.tree.leaves(abstract_params):
    size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
    total += size
    whole += size if leaf.sharding.shard_shape(leaf.shape) == leaf.shape else 0
  return whole / total


def test_tensor_parallelism_alone_leaves_the_resnet_whole_and_is_stopped(tiny):
  abstract, shardings = _layout(tiny, TP_MESH, "tensor")
  fraction, whole = sharding.replicated_fraction(abstract.params, shardings.params)
  assert fraction == pytest.approx(_brute_force_fraction(abstract.params))
  assert fraction > 0.5 and any("resnet" in path for path, _ in whole[:3])
  with pytest.raises(sharding.ReplicationError, match=r"mesh.strategy='tensor'.*fsdp"):
    sharding.check_replication(abstract.params, shardings.params, TP_MESH, "tensor", 0.5)
  # A looser bound lets it run; the check returns the measured share.
  assert sharding.check_replication(abstract.params, shardings.params, TP_MESH, "tensor",
                                    0.99) == pytest.approx(fraction)


@pytest.mark.parametrize("mesh, strategy", [(DP_MESH, "fsdp"), (TP_MESH, "fsdp_tensor")])
def test_fsdp_splits_nearly_everything(tiny, mesh, strategy):
  abstract, shardings = _layout(tiny, mesh, strategy)
  fraction = sharding.check_replication(abstract.params, shardings.params, mesh, strategy, 0.5)
  assert fraction == pytest.approx(_brute_force_fraction(abstract.params)) and fraction < 0.05


@pytest.mark.parametrize("mesh, strategy", [(DP_MESH, "data"), (DP_MESH, "tensor"),
                                            (AbstractMesh((1,), ("data",)), "fsdp")])
def test_nothing_to_split_is_not_checked(tiny, mesh, strategy):
  # "data" asks for no split; "tensor" without a model axis and FSDP on one device cannot split.
  abstract, shardings = _layout(tiny, mesh, strategy)
  assert sharding.check_replication(abstract.params, shardings.params, mesh, strategy,
                                    0.0) is None


def test_memory_plan_divides_by_the_devices(tiny):
  config, _, _ = tiny
  plan = {r["strategy"]: r for r in memory_plan.strategy_memory(config, 64, 8)}
  assert list(plan) == list(sharding.STRATEGIES)
  data, fsdp = plan["data"], plan["fsdp"]
  assert data["replicated_fraction"] == 1.0 and data["mesh"] == {"data": 8}
  assert plan["tensor"]["mesh"] == {"data": 4, "model": 2}
  # Adam (AMSGrad): mu, nu and nu_max, each the size of the parameters.
  assert data["opt_state_mib"] == pytest.approx(3 * data["params_mib"], rel=1e-3)
  # FSDP on 8 devices: an eighth, give or take what stays whole (under 5 %).
  assert data["params_mib"] / 8 <= fsdp["params_mib"] <= data["params_mib"] * (1 / 8 + 0.05)


def test_unknown_strategy_is_a_config_error(tiny_synthetic, capsys):
  config = tiny_model_config(tiny_synthetic[0].data.data_dir)
  config.mesh.strategy = "zero3"
  assert run.main(config, workdir="unused", mode="bench_train", split="test", images=[],
                  output="") == 2
  assert "mesh.strategy='zero3'" in capsys.readouterr().err
