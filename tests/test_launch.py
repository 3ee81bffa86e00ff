"""launch.py as a user runs it: the main job end to end on a tiny run, and one-paragraph errors."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
# The same on-disk compile cache as the in-process tests (tests/conftest.py).
_ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(tempfile.gettempdir())
                                         / "cnx2rg_jax_test_xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}
# tests/conftest.py's tiny_model_config, as command-line overrides.
TINY = ["--config.data.num_examples=30", "--config.data.build_workers=0",
        "--config.data.num_workers=0", "--config.data.num_shards=2", "--config.text.min_count=1",
        "--config.data.image_size=40", "--config.data.crop_size=32", "--config.data.max_tokens=24",
        "--config.model.resnet_width=8", "--config.model.d_model=32", "--config.model.d_ff=64",
        "--config.model.rm_d_model=32", "--config.model.rm_num_slots=2",
        "--config.decode.beam_size=2", "--config.decode.max_len=24", "--config.eval.batch_size=8",
        "--config.eval.meteor=False", "--config.train.batch_size=4", "--config.train.num_steps=2",
        "--config.train.log_every=1", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=0"]


def _launch(*args, cwd=REPO):
  return subprocess.run([sys.executable, str(REPO / "launch.py"),
                         "--config=" + str(REPO / "configs/cnx2rg.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=600, env=_ENV)


def test_main_job_builds_trains_and_prints_the_test_table(tmp_path):
  workdir = tmp_path / "run"
  res = _launch(f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'tfds'}", *TINY)
  assert res.returncode == 0, res.stderr[-3000:]
  out = res.stdout
  assert "splits: train 21, val 3, test 6" in out and "built in" in out
  assert "step 2/2  loss" in out and "val @ step 2 (3 reports" in out
  assert "test split, checkpoint step 2 (best val bleu_4)" in out
  for name in ("CN-X2RG", "most frequent train report", "nearest neighbour (image features)"):
    assert f"| {name} |" in out
  vocab = json.loads((workdir / "tokenizer" / "vocab.json").read_text())
  assert vocab["kind"] == "word" and "。" in vocab["tokens"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["num_examples"] == 30 and config["model"]["d_model"] == 32
  assert len((workdir / "eval" / "test_reports.jsonl").read_text().splitlines()) == 6
  # Started again: the data is reused, training resumes at its end, the test table is redone.
  again = _launch(f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'tfds'}", *TINY)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "reused" in again.stdout and "resumed from step 2" in again.stdout
  assert "| CN-X2RG |" in again.stdout


def test_release_without_a_folder_is_one_clear_paragraph(tmp_path):
  res = _launch(f"--workdir={tmp_path / 'run'}", "--config.data.name=release",
                f"--config.data.data_dir={tmp_path / 'tfds'}",
                f"--config.data.manual_dir={tmp_path / 'nowhere'}")
  assert res.returncode == 2
  assert "has no annotation.json" in res.stderr and "Traceback" not in res.stderr
