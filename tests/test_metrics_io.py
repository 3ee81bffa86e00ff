"""cnx2rg_jax.training.metrics_io: event files read back by TensorBoard's own reader, the progress
line against hand-computed answers, and TrainMetrics against NumPy."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.training import metrics_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_events(logdir):
  """TensorBoard's EventAccumulator over `logdir`, keeping every event."""
  # pylint: disable-next=import-outside-toplevel
  from tensorboard.backend.event_processing import event_accumulator as ea
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
  acc.Reload()
  return acc


def scalar_series(acc, tag):
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_round_trip(tmp_path):
  values = {0: {"train/loss": 3.25, "train/lr": 1e-4}, 10: {"train/loss": 2.7182817},
            25: {"train/loss": -0.1, "train/lr": 5e-5, "eval/bleu_4": 0.1234567}}
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    for step, scalars in values.items():
      writer.scalars(step, scalars)
    writer.scalars(30, {})  # nothing to write
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
  acc = read_events(tmp_path)
  assert sorted(acc.Tags()["scalars"]) == ["eval/bleu_4", "train/loss", "train/lr"]
  for tag in ("train/loss", "train/lr", "eval/bleu_4"):
    # simple_value is a float32 field: the values come back as float32, exactly.
    expected = [(s, float(np.float32(v[tag]))) for s, v in values.items() if tag in v]
    assert scalar_series(acc, tag) == expected


def test_non_finite_scalars(tmp_path):
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    writer.scalars(1, {"loss": float("nan"), "grad_norm": np.float32(np.inf)})
    writer.scalars(2, {"loss": jnp.float32(-np.inf), "grad_norm": 1.0})
  acc = read_events(tmp_path)
  (s1, nan), (s2, neg_inf) = scalar_series(acc, "loss")
  assert (s1, s2) == (1, 2) and math.isnan(nan) and neg_inf == -math.inf
  assert scalar_series(acc, "grad_norm") == [(1, math.inf), (2, 1.0)]


def test_text_round_trip_chinese(tmp_path):
  reports = {5: "双肺纹理清晰，心影不大。\n未见明显异常。", 50: "右下肺见斑片状阴影，考虑炎症。"}
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    for step, report in reports.items():
      writer.text(step, "samples/报告", report)
  acc = read_events(tmp_path)
  events = acc.Tensors("samples/报告/text_summary")
  got = {e.step: [s.decode("utf-8") for s in e.tensor_proto.string_val] for e in events}
  assert got == {step: [report] for step, report in reports.items()}
  content = acc.SummaryMetadata("samples/报告/text_summary").plugin_data
  assert content.plugin_name == "text"


def test_hparams(tmp_path):
  # pylint: disable-next=import-outside-toplevel
  from tensorboard.plugins.hparams import plugin_data_pb2
  config = {"train": {"batch_size": 16, "lr": 1e-4, "mixed": True, "schedule": "cosine",
                      "betas": (0.9, 0.98), "unused": None},
            "seed": np.int64(3)}
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    writer.hparams(config)
  content = read_events(tmp_path).PluginTagToContent("hparams")
  assert list(content) == ["_hparams_/session_start_info"]
  data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
  hp = data.session_start_info.hparams
  assert sorted(hp) == ["seed", "train.batch_size", "train.betas", "train.lr", "train.mixed",
                        "train.schedule"]
  assert hp["train.batch_size"].number_value == 16 and hp["seed"].number_value == 3
  assert hp["train.lr"].number_value == 1e-4 and hp["train.mixed"].bool_value is True
  assert hp["train.schedule"].string_value == "cosine"
  assert hp["train.betas"].string_value == "(0.9, 0.98)"


def test_hparams_accepts_config_dict(tmp_path):
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict({"model": {"d_model": 512}, "name": "cnx2rg"})
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    writer.hparams(config)
  assert "_hparams_/session_start_info" in read_events(tmp_path).PluginTagToContent("hparams")


def test_flush_puts_events_on_disk(tmp_path):
  writer = metrics_io.SummaryWriter(str(tmp_path))
  for step in range(20):
    writer.scalars(step, {"loss": float(step)})
  writer.flush()  # no sleep: every event is on disk once flush() returns
  assert scalar_series(read_events(tmp_path), "loss") == [(s, float(s)) for s in range(20)]
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(RuntimeError, match="closed"):
    writer.scalars(21, {"loss": 1.0})


def test_purge_step_hides_events_of_a_crashed_run(tmp_path):
  with metrics_io.SummaryWriter(str(tmp_path)) as writer:
    for step in range(6):
      writer.scalars(step, {"loss": float(step)})
  with metrics_io.SummaryWriter(str(tmp_path), purge_step=3) as writer:
    for step in (3, 4):
      writer.scalars(step, {"loss": 10.0 + step})
  assert len(os.listdir(tmp_path)) == 2
  assert scalar_series(read_events(tmp_path), "loss") == [
      (0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]


def test_disabled_writer_creates_nothing(tmp_path):
  logdir = tmp_path / "not_here"
  with metrics_io.SummaryWriter(str(logdir), enabled=False) as writer:
    writer.scalars(1, {"loss": 1.0})
    writer.text(1, "sample", "报告")
    writer.hparams({"a": 1})
    writer.flush()
  assert not logdir.exists()
  assert list(tmp_path.iterdir()) == []


def fake_clock(times):
  it = iter(times)
  return lambda: next(it)


def test_progress_known_answers():
  progress = metrics_io.Progress(2000, 16, clock=fake_clock([30.0, 40.0, 60.0, 61.0, 401.0]))
  # The first call only sets the reference point (its interval holds the compilation).
  assert progress.line(100, 3.45671, 1e-4) == (
      "step 100/2000  loss 3.4567  lr 1.00e-04  -- ex/s  ETA --")
  # 100 steps * 16 in 10 s; 0.1 s/step * 1800 steps left.
  assert progress.line(200, 3.0, 1e-4) == (
      "step 200/2000  loss 3.0000  lr 1.00e-04  160.0 ex/s  ETA 3m00s")
  # 100 steps * 16 in 20 s; s/step = 0.8 * 0.1 + 0.2 * 0.2 = 0.12; * 1700 = 204 s.
  assert progress.line(300, 2.5, 9.5e-5) == (
      "step 300/2000  loss 2.5000  lr 9.50e-05  80.0 ex/s  ETA 3m24s")
  # No step since the last call: no new rate, the ETA keeps the smoothed one.
  assert progress.line(300, float("nan"), 9.5e-5) == (
      "step 300/2000  loss nan  lr 9.50e-05  -- ex/s  ETA 3m24s")
  assert progress.line(2000, 1.25, 0.0) == (
      "step 2000/2000  loss 1.2500  lr 0.00e+00  80.0 ex/s  ETA 0s")


def test_progress_resumed_run():
  progress = metrics_io.Progress(2000, 8, start_step=1500, clock=fake_clock([100.0, 105.0]))
  assert progress.line(1600, 1.0, 1e-5).endswith("-- ex/s  ETA --")
  # 100 steps * 8 in 5 s; 0.05 s/step * 300 steps left.
  assert progress.line(1700, 1.0, 1e-5) == (
      "step 1700/2000  loss 1.0000  lr 1.00e-05  160.0 ex/s  ETA 15s")


def test_progress_rejects_bad_smoothing():
  with pytest.raises(ValueError):
    metrics_io.Progress(10, 1, smoothing=1.0)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.49, "0s"), (0.5, "1s"), (59.5, "1m00s"), (252, "4m12s"),
    (3600 + 5 * 60 + 9, "1h05m09s"), (25 * 3600 + 61, "25h01m01s"), (-3, "0s")])
def test_format_duration(seconds, text):
  assert metrics_io.format_duration(seconds) == text


STEP_KEYS = ("loss", "token_loss", "keyword_loss", "grad_norm", "learning_rate")


def step_outputs(rng, n_steps):
  return [{k: np.float32(rng.uniform(0.0, 5.0)) for k in STEP_KEYS} for _ in range(n_steps)]


def test_train_metrics_mean_and_last_value():
  outputs = step_outputs(np.random.default_rng(0), 7)
  acc = None
  for out in outputs:
    update = metrics_io.TrainMetrics.single_from_model_output(**out)
    acc = update if acc is None else acc.merge(update)
  got = metrics_io.compute_floats(acc)
  assert sorted(got) == sorted(STEP_KEYS) and all(type(v) is float for v in got.values())
  for key in STEP_KEYS[:-1]:
    np.testing.assert_allclose(got[key], np.mean([o[key] for o in outputs]), rtol=1e-6)
  assert got["learning_rate"] == float(outputs[-1]["learning_rate"])


def test_train_metrics_weighting_follows_clu():
  # Average counts every element: per-example outputs of unequal batches weigh by their size;
  # LastValue keeps the mean of the last output only.
  rng = np.random.default_rng(1)
  batches = [rng.normal(size=n).astype(np.float32) for n in (2, 5, 3)]
  acc = None
  for values in batches:
    out = {k: np.float32(1.0) for k in STEP_KEYS}
    out["token_loss"] = values
    out["learning_rate"] = values
    update = metrics_io.TrainMetrics.single_from_model_output(**out)
    acc = update if acc is None else acc.merge(update)
  got = metrics_io.compute_floats(acc)
  np.testing.assert_allclose(got["token_loss"], np.mean(np.concatenate(batches)), rtol=1e-6)
  assert not np.isclose(got["token_loss"], np.mean([b.mean() for b in batches]))
  np.testing.assert_allclose(got["learning_rate"], batches[-1].mean(), rtol=1e-6)


def test_train_metrics_under_jit():
  outputs = step_outputs(np.random.default_rng(2), 5)

  @jax.jit
  def merge(acc, out):
    return acc.merge(metrics_io.TrainMetrics.single_from_model_output(**out))

  acc = metrics_io.TrainMetrics.empty()
  for out in outputs:
    # Extra step outputs (steps.py also returns `finite`) are ignored.
    acc = merge(acc, {**{k: jnp.asarray(v) for k, v in out.items()}, "finite": jnp.float32(1)})
  got = metrics_io.compute_floats(acc)
  for key in STEP_KEYS[:-1]:
    np.testing.assert_allclose(got[key], np.mean([o[key] for o in outputs]), rtol=1e-6)
  assert got["learning_rate"] == float(outputs[-1]["learning_rate"])
  assert merge._cache_size() == 1  # pylint: disable=protected-access


def test_empty_train_metrics_are_nan():
  got = metrics_io.compute_floats(metrics_io.TrainMetrics.empty())
  assert all(math.isnan(v) for v in got.values())


def test_no_tensorflow_imported(tmp_path):
  code = (
      "import sys\n"
      "from cnx2rg_jax.training import metrics_io\n"
      "assert 'tensorflow' not in sys.modules\n"
      "assert 'tensorboardX' not in sys.modules  # imported only by an enabled writer\n"
      f"with metrics_io.SummaryWriter({str(tmp_path)!r}) as w:\n"
      "  w.scalars(1, {'loss': 1.0})\n"
      "  w.text(1, 'sample', 'text')\n"
      "assert 'tensorflow' not in sys.modules\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
