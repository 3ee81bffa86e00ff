"""The training loop: it learns, resumes exactly, writes events, and stops on NaN."""

import glob

import jax
import numpy as np
import pytest

from cnx2rg_jax.training import loop
from tests.conftest import tiny_model_config


def _config(tiny_synthetic, **train):
  base, _ = tiny_synthetic
  c = tiny_model_config(base.data.data_dir)
  c.model.resnet_width = 64  # the torchvision width, as in the paper's configuration
  c.train.keyword_weight = 0.5
  for key, value in train.items():
    c.train[key] = value
  return c


def _params(result):
  return jax.device_get(result.state.params)


def test_resume_is_bit_identical(tiny_synthetic, tmp_path):
  straight = loop.train(_config(tiny_synthetic, num_steps=4), str(tmp_path / "a"),
                        log=lambda _: None)
  lines = []
  loop.train(_config(tiny_synthetic, num_steps=2), str(tmp_path / "b"), log=lines.append)
  resumed = loop.train(_config(tiny_synthetic, num_steps=4), str(tmp_path / "b"),
                       log=lines.append)
  assert any("resumed from step 2" in line for line in lines)
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  assert straight.last_metrics["loss"] == resumed.last_metrics["loss"]
  assert glob.glob(str(tmp_path / "a" / "events" / "*tfevents*"))
  assert any(line.startswith("step 4/4") for line in lines)


def test_nan_loss_stops_naming_the_step(tiny_synthetic, tmp_path):
  config = _config(tiny_synthetic, num_steps=4, lr_rest=1e30, lr_visual=1e30,
                   lr_schedule="constant", clip_value=0.0)
  with pytest.raises(loop.NonFiniteLossError, match=r"NaN/Inf at step \d"):
    loop.train(config, str(tmp_path / "nan"), log=lambda _: None)
