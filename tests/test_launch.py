"""launch.py as a user runs it: the data-preparation job and its one-paragraph errors."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(*args, cwd=REPO):
  return subprocess.run([sys.executable, str(REPO / "launch.py"),
                         "--config=" + str(REPO / "configs/cnx2rg.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=300)


def test_main_job_builds_the_dataset_and_tokenizer_and_says_so(tmp_path):
  workdir = tmp_path / "run"
  res = _launch(f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'tfds'}",
                "--config.data.num_examples=30", "--config.data.build_workers=0")
  assert res.returncode == 0, res.stderr
  assert "splits: train 21, val 3, test 6" in res.stdout
  assert "built in" in res.stdout
  vocab = json.loads((workdir / "tokenizer" / "vocab.json").read_text())
  assert vocab["kind"] == "word" and "。" in vocab["tokens"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["num_examples"] == 30
  again = _launch(f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'tfds'}",
                  "--config.data.num_examples=30")
  assert again.returncode == 0 and "reused" in again.stdout


def test_release_without_a_folder_is_one_clear_paragraph(tmp_path):
  res = _launch(f"--workdir={tmp_path / 'run'}", "--config.data.name=release",
                f"--config.data.data_dir={tmp_path / 'tfds'}",
                f"--config.data.manual_dir={tmp_path / 'nowhere'}")
  assert res.returncode == 2
  assert "has no annotation.json" in res.stderr and "Traceback" not in res.stderr
