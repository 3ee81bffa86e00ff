"""--mode=bench_train: the JSON line's shape, and figures that agree with each other."""

import json

import pytest

from cnx2rg_jax import run
from cnx2rg_jax.bench import train as bench_train
from configs import cnx2rg
from tests.conftest import tiny_model_config


def test_bench_train_prints_one_json_line(tiny_synthetic, monkeypatch, capsys):
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.bench.train_steps, config.bench.train_warmup, config.bench.train_vocab_size = 2, 0, 64
  seen = []

  # the shipped dims compile for a minute; the code path is one
  def tiny_dims(name, base_config, get_config):
    seen.append(name)
    return tiny_model_config(base.data.data_dir)

  monkeypatch.setattr(bench_train, "_dims", tiny_dims)
  assert run.main(config, workdir="unused", mode="bench_train", split="test", images=[],
                  output="") == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  out = json.loads(lines[0])
  # timed: demo, paper; then the paper model's memory table
  assert seen == ["demo", "paper", "paper"] and out["platform"] == "cpu"
  assert out["num_devices"] >= 1
  memory = out["paper_state_memory_per_device"]
  assert memory["devices"] == (out["num_devices"] if out["num_devices"] > 1
                               else config.bench.memory_devices)
  assert [m["strategy"] for m in memory["strategies"]] == ["data", "tensor", "fsdp",
                                                           "fsdp_tensor"]
  assert [r["config"] for r in out["results"]] == ["demo", "paper"]
  for r in out["results"]:
    assert r["batch"] == config.train.batch_size and r["timed_steps"] == 2
    assert r["examples_per_sec"] == pytest.approx(r["batch"] / r["step_seconds"], rel=1e-2)
    assert r["parameters"] > 0 and r["image_size"] == config.data.crop_size
    # model FLOP/s = analytic FLOPs per example x examples/s; no known peak on a CPU
    assert r["model_tflops_per_sec"] == pytest.approx(
        r["train_gflops_per_example"] * r["examples_per_sec"] / 1e3, rel=2e-2)
    assert r["mfu"] is None and r["dtype"] == "float32"


def test_the_benchmarked_dims_are_the_shipped_configs():
  base = cnx2rg.get_config()
  for name in ("demo", "paper"):
    dims = bench_train._dims(name, base, cnx2rg.get_config)  # pylint: disable=protected-access
    assert dims.model.to_dict() == cnx2rg.get_config("" if name == "demo" else name).model.to_dict()
  paper = bench_train._dims("paper", base, cnx2rg.get_config)  # pylint: disable=protected-access
  assert paper.model.resnet_depth == 101


def test_unknown_bench_config_is_refused(tiny_synthetic):
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.bench.train_configs = ("huge",)
  with pytest.raises(ValueError, match="huge"):
    bench_train.bench_train(config, cnx2rg.get_config)


def test_mfu_uses_the_chips_peak_for_the_dtype():
  assert bench_train.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert bench_train.peak_flops("NVIDIA H200", "float32") == 494.7e12
  assert bench_train.peak_flops("cpu", "bfloat16") is None
  assert bench_train.peak_flops("cpu", "bfloat16", override_tflops=2.5) == 2.5e12


def test_the_gpu_decode_variant_resolves():
  from configs import bench_decode  # pylint: disable=import-outside-toplevel
  c = bench_decode.get_config("gpu")
  assert c.model.dtype == "bfloat16" and tuple(c.bench.batches) == (16, 64, 256)
  assert tuple(c.bench.impls) == ("cached",) and c.model.resnet_depth == 101
