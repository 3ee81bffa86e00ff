"""The train step on a (4, 2) data x model mesh of 8 simulated CPU devices equals one device,
with tensor parallelism (the default strategy) and with FSDP plus tensor parallelism; and each
device holds the train-state bytes that training.memory_plan plans."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results():
  # Unoptimised XLA compiles: two steps do not pay back the optimiser's compile time.
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                                    "--xla_backend_optimization_level=0",
         "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  res = subprocess.run([sys.executable, str(REPO / "tests/helpers/sharded_step.py"), "tensor",
                        "fsdp_tensor"], env=env, capture_output=True, text=True, timeout=900,
                       cwd=REPO)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def result(results):
  return results["tensor"]


def test_same_losses_and_first_update_as_one_device(result):
  for a, b in zip(result["loss_mesh"], result["loss_one"]):
    assert a == pytest.approx(b, rel=1e-5)
  assert result["loss_one"][1] < result["loss_one"][0]  # the steps did something
  assert result["moved"] > 1e-3
  excess, where = result["worst"][0][0]
  assert excess <= 0, f"after step 1, {where} differs from the one-device run (rtol 1e-5)"


def test_second_update_as_one_device(result):
  excess, where = result["worst"][1][0]
  assert excess <= 0, f"after step 2, {where} differs from the one-device run (rtol 1e-5)"


@pytest.mark.parametrize("path, axis, dim", [
    ("['transformer']['decoder_layers_0']['ffn']['wi']['kernel']", 1, 1),
    ("['transformer']['decoder_layers_0']['ffn']['wo']['kernel']", 0, 0),
    ("['transformer']['logit']['kernel']", 1, 1),
])
def test_model_axis_splits_the_large_matrices(result, path, axis, dim):
  spec = result["spec"][path]
  assert "'model'" in spec, spec
  shard, full = result["shard"][path]
  assert shard[dim] * 2 == full[dim]  # split in two over 'model'
  assert [s for i, s in enumerate(shard) if i != dim] == [f for i, f in enumerate(full)
                                                          if i != dim]


@pytest.mark.parametrize("path", [
    "['transformer']['decoder_layers_0']['norm_ff']['scale']",
    "['visual']['resnet']['layer4_1']['conv2']['kernel']",  # ResNet replicated (sharding.py)
])
def test_the_rest_is_replicated(result, path):
  shard, full = result["shard"][path]
  assert shard == full


def test_fsdp_tensor_trains_as_one_device(results):
  r = results["fsdp_tensor"]
  for a, b in zip(r["loss_mesh"], r["loss_one"]):
    assert a == pytest.approx(b, rel=1e-5)
  for step in (0, 1):
    excess, where = r["worst"][step][0]
    assert excess <= 0, f"after step {step + 1}, {where} differs from the one-device run"


@pytest.mark.parametrize("path, split", [
    # FSDP splits the ResNet's output channels over 'data' (4), which "tensor" leaves whole.
    ("['visual']['resnet']['layer4_1']['conv2']['kernel']", {3: 4}),
    # ('embed', 'mlp'): 'data' on the model width, 'model' on the hidden width.
    ("['transformer']['decoder_layers_0']['ffn']['wi']['kernel']", {0: 4, 1: 2}),
    ("['transformer']['decoder_layers_0']['norm_ff']['scale']", {0: 4}),
])
def test_fsdp_splits_parameters_over_the_data_axis(results, path, split):
  shard, full = results["fsdp_tensor"]["shard"][path]
  assert [f // split.get(i, 1) for i, f in enumerate(full)] == shard, (shard, full)


@pytest.mark.parametrize("strategy", ["tensor", "fsdp_tensor"])
def test_memory_plan_matches_what_devices_hold(results, strategy):
  r = results[strategy]
  assert r["device0_bytes"] == r["planned_bytes"]
  assert results["fsdp_tensor"]["device0_bytes"] < results["tensor"]["device0_bytes"]
