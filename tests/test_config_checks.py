"""Every bad-config error: a one-paragraph message naming the key, exit code 2, no traceback."""

import json
import os
import subprocess
import sys

import pytest

from cnx2rg_jax import config_checks, run
from configs import cnx2rg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD_VALUES = [
    ("data.name", "mimic"), ("data.num_examples", 3), ("data.image_size", 16),
    ("data.crop_size", 300), ("data.normalization", "minmax"), ("data.max_tokens", 2),
    ("text.tokenizer", "bpe"), ("model.resnet_depth", 152), ("model.resnet_width", 0),
    ("model.d_model", 130), ("model.rm_d_model", 130), ("model.num_encoder_layers", 0),
    ("model.dropout", 1.0), ("model.dtype", "float16"), ("decode.beam_size", 0),
    ("decode.max_len", 500), ("eval.clinical_scorer", "chexbert"), ("eval.batch_size", 0),
    ("eval.references", "truncated"),
    ("mesh.axes", ("model",)), ("mesh.shape", (2, 2)), ("train.batch_size", 0),
    ("train.num_steps", 0), ("train.keep_last", 0), ("train.lr_rest", 0.0),
    ("train.lr_schedule", "linear"), ("train.lr_gamma", 1.5), ("train.clip_value", -1.0),
    ("train.keyword_weight", -0.1),
]


def _set(config, key, value):
  *path, last = key.split(".")
  node = config
  for p in path:
    node = node[p]
  node[last] = value


def test_the_shipped_configs_pass():
  config_checks.check(cnx2rg.get_config())
  config_checks.check(cnx2rg.get_config("paper"))
  for name in cnx2rg.ABLATIONS:  # the ablation decodes with R2Gen's beam, as it was recorded
    config = cnx2rg.get_config(f"ablation={name}")
    config_checks.check(config)
    assert config.decode.method == "beam", name


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_each_bad_value_names_its_key(key, value):
  config = cnx2rg.get_config()
  _set(config, key, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(config)
  message = str(e.value)
  assert f"config key {key}={value!r}" in message and "\n" not in message
  assert f"--config.{key}=" in message


def test_cn_radgraph_scorer_needs_its_folder():
  config = cnx2rg.get_config()
  config.eval.clinical_scorer = "cn_radgraph"
  with pytest.raises(config_checks.ConfigError, match="eval.cn_radgraph_dir"):
    config_checks.check(config)


def test_bad_value_through_run_main_is_one_paragraph(tmp_path, capsys):
  config = cnx2rg.get_config()
  config.train.lr_schedule = "linear"
  code = run.main(config, workdir=str(tmp_path), mode="train", split="test", images=[], output="")
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: config key train.lr_schedule='linear'")
  assert "Traceback" not in err and not (tmp_path / "config.json").exists()


def test_missing_release_folder(tmp_path, capsys):
  config = cnx2rg.get_config("paper")
  config.data.manual_dir = str(tmp_path / "no_such_release")
  config.data.data_dir = str(tmp_path / "tfds")
  code = run.main(config, workdir=str(tmp_path / "wd"), mode="train", split="test", images=[],
                  output="")
  err = capsys.readouterr().err
  assert code == 2 and "no_such_release" in err and "annotation.json" in err


def test_incompatible_workdir_names_the_differences(tmp_path, capsys):
  old = cnx2rg.get_config()
  config_checks.write_config(old, str(tmp_path))
  config = cnx2rg.get_config()
  config.model.d_model = 256
  config.text.min_count = 5
  config.train.num_steps = 10  # training keys may change (train longer, log more often)
  for mode in ("train", "eval", "predict"):
    code = run.main(config, workdir=str(tmp_path), mode=mode, split="test", images=["x.png"],
                    output="")
    err = capsys.readouterr().err
    assert code == 2, mode
    assert "model.d_model (128 there, 256 here)" in err and "text.min_count (3 there, 5 here)" in err
    assert "train.num_steps" not in err
  assert json.loads((tmp_path / "config.json").read_text())["model"]["d_model"] == 128
  config.model.d_model, config.text.min_count = 128, 3
  config_checks.check_workdir(config, str(tmp_path))  # the same run values pass


def test_unreadable_workdir_config(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(config_checks.WorkdirError, match="cannot be read"):
    config_checks.check_workdir(cnx2rg.get_config(), str(tmp_path))


def _launch(*args):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("args,expect", [
    (["--config=configs/cnx2rg.py", "--config.train.bogus=1"], "unknown config key"),
    (["--config=configs/cnx2rg.py", "--config.train.batch_size=abc"], "train.batch_size=abc"),
    (["--config=configs/cnx2rg.py:bad"], "unknown variant 'bad'"),
    (["--config=configs/no_such_config.py"], "no such config file"),
])
def test_launch_flag_errors_are_one_paragraph(args, expect):
  result = _launch(*args, "--workdir=/nonexistent/never_made")
  assert result.returncode == 2, result.stderr
  assert expect in result.stderr and "Traceback" not in result.stderr
