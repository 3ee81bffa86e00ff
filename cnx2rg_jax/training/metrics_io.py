"""Metrics writing for training: TensorBoard event files, a console progress line, aggregation.

* `SummaryWriter` writes TensorBoard event files with tensorboardX (protobuf only, no TensorFlow).
  It builds the Summary protos with `tensorboardX.summary` and appends the events synchronously
  through tensorboardX's `EventsWriter`, so `flush()` really puts every event on disk
  (tensorboardX's own `SummaryWriter` queues events for a background thread, and its `flush()`
  can return before queued events are written). tensorboardX is imported only when a writer is
  enabled: its package import also loads torch where torch happens to be installed.
* `Progress` formats one line per logging step: loss, learning rate, examples/s, ETA.
* `TrainMetrics` is a clu.metrics collection of the train step outputs, to merge inside jit and
  compute on the host (`compute_floats`).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
from clu import metrics as clu_metrics

# Event files of writers made in the same second by the same process must not collide.
_WRITER_IDS = itertools.count()


class SummaryWriter:
  """Appends scalars, text and hyper-parameters to a TensorBoard event file in `logdir`.

  With `enabled=False` (e.g. on processes other than 0 of a multi-host run) every method is a
  no-op and nothing is created. Events are buffered by the file; call `flush()` to make them
  visible to TensorBoard. Use as a context manager, or call `close()`.
  """

  def __init__(self, logdir: str, *, enabled: bool = True, purge_step: int | None = None):
    """`purge_step`: on a restart from step T, pass T so TensorBoard hides older events >= T."""
    self.logdir = str(logdir)
    self.enabled = enabled
    self._closed = False
    self._writer = None
    if not enabled:
      return
    # pylint: disable-next=import-outside-toplevel
    from tensorboardX import event_file_writer, record_writer, summary
    # pylint: disable-next=import-outside-toplevel
    from tensorboardX.proto import event_pb2, summary_pb2
    self._summary = summary
    self._event_pb2 = event_pb2
    self._summary_pb2 = summary_pb2
    record_writer.directory_check(self.logdir)
    # zero-padded: TensorBoard reads a run's files in name order, and ".10" sorts before ".9"
    suffix = f".{os.getpid()}.{next(_WRITER_IDS):06d}"
    # EventsWriter names the file events.out.tfevents.<time>.<host><suffix> and writes the
    # file_version header event.
    self._writer = event_file_writer.EventsWriter(
        os.path.join(self.logdir, "events"), filename_suffix=suffix)
    if purge_step is not None:
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self._write(event_pb2.Event(step=int(purge_step), session_log=start))

  def _active(self) -> bool:
    if self._closed:
      raise RuntimeError(f"SummaryWriter({self.logdir!r}) is closed")
    return self.enabled

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._writer.write_event(event)

  def _write_summary(self, step: int, values: list) -> None:
    summary = self._summary_pb2.Summary(value=values)
    self._write(self._event_pb2.Event(step=int(step), summary=summary))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """One event holding every value (stored as float32; NaN/inf are written as they are).

    tensorboardX replaces characters of a tag outside [-/\\w.] with '_'.
    """
    if not self._active() or not values:
      return
    protos = []
    for tag, value in values.items():
      protos.extend(self._summary.scalar(tag, float(value)).value)
    self._write_summary(step, protos)

  def text(self, step: int, tag: str, value: str) -> None:
    """A text summary (UTF-8), shown by TensorBoard's text plugin as `<tag>/text_summary`."""
    if not self._active():
      return
    self._write_summary(step, list(self._summary.text(tag, value).value))

  def hparams(self, config: Mapping[str, Any] | Any) -> None:
    """Records a (nested) config as this run's hyper-parameters, keys joined with '.'.

    Only the session start info is written: TensorBoard's hparams plugin then takes every
    scalar tag of the run as a metric. Values other than bool/int/float/str become strings;
    None values are left out.
    """
    if not self._active():
      return
    _, session_start, _ = self._summary.hparams(_flatten_config(config), {})
    self._write_summary(0, list(session_start.value))

  def flush(self) -> None:
    """Writes buffered events to disk (and fsyncs local files)."""
    if self._active():
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the file; later calls to close() do nothing, other calls raise."""
    if self._closed:
      return
    self._closed = True
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _flatten_config(config: Any, prefix: str = "") -> dict[str, bool | int | float | str]:
  """{'a': {'b': 1}} -> {'a.b': 1}; accepts mappings and ml_collections.ConfigDict."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if hasattr(value, "to_dict") or isinstance(value, Mapping):
      flat.update(_flatten_config(value, name + "."))
      continue
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
      value = value.item()  # NumPy/JAX scalars
    if value is None:
      continue
    flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
  return flat


def format_duration(seconds: float) -> str:
  """Whole seconds, rounded half up: 42s, 4m12s, 3h05m09s."""
  total = int(math.floor(max(seconds, 0.0) + 0.5))
  hours, rest = divmod(total, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class Progress:
  """Formats `step 120/2000  loss 3.4567  lr 1.00e-04  12.3 ex/s  ETA 4m12s`.

  ex/s is measured over the steps since the previous call. The ETA uses an exponential moving
  average of the seconds per step, `smoothing` being the weight of the history. The first call
  only sets the reference point (the time before it usually includes compilation), so it shows
  `-- ex/s  ETA --`; so does a call that advances no step before any rate exists.
  """

  def __init__(self, total_steps: int, batch_size: int, *, start_step: int = 0,
               clock: Callable[[], float] = time.perf_counter, smoothing: float = 0.8):
    if not 0.0 <= smoothing < 1.0:
      raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.smoothing = smoothing
    self._clock = clock
    self._last: tuple[int, float] | None = None  # (step, time) of the previous call
    self._seconds_per_step: float | None = None
    self.start_step = start_step  # where this run (re)started; rates start at the first call

  def line(self, step: int, loss: float, lr: float) -> str:
    """The progress line at `step` (the number of steps done)."""
    now = self._clock()
    rate = None
    if self._last is not None:
      last_step, last_time = self._last
      steps, seconds = step - last_step, now - last_time
      if steps > 0 and seconds > 0:
        rate = steps * self.batch_size / seconds
        per_step = seconds / steps
        if self._seconds_per_step is None:
          self._seconds_per_step = per_step
        else:
          self._seconds_per_step = (self.smoothing * self._seconds_per_step
                                    + (1.0 - self.smoothing) * per_step)
    self._last = (step, now)
    speed = f"{rate:.1f} ex/s" if rate is not None else "-- ex/s"
    if self._seconds_per_step is None:
      eta = "--"
    else:
      eta = format_duration(max(self.total_steps - step, 0) * self._seconds_per_step)
    return (f"step {step}/{self.total_steps}  loss {float(loss):.4f}  lr {float(lr):.2e}  "
            f"{speed}  ETA {eta}")


# Train step outputs (cnx2rg_jax.training.steps): scalars per step, averaged over the steps
# merged; the learning rate keeps the last step's value. Built with Collection.create because
# the annotations of a class body are strings under `from __future__ import annotations`.
TrainMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average.from_output("loss"),
    token_loss=clu_metrics.Average.from_output("token_loss"),
    keyword_loss=clu_metrics.Average.from_output("keyword_loss"),
    grad_norm=clu_metrics.Average.from_output("grad_norm"),
    learning_rate=clu_metrics.LastValue.from_output("learning_rate"),
)
TrainMetrics.__name__ = TrainMetrics.__qualname__ = "TrainMetrics"
TrainMetrics.__module__ = __name__
TrainMetrics.__doc__ = """clu Collection of the train step outputs.

In jit: `TrainMetrics.single_from_model_output(**step_outputs)`, then `acc.merge(update)`
(extra outputs such as `finite` are ignored). On the host: `compute_floats(acc)`.
"""


def compute_floats(collection: clu_metrics.Collection) -> dict[str, float]:
  """`collection.compute()` as Python floats (NaN where nothing was merged into an Average)."""
  return {name: float(value) for name, value in jax.device_get(collection.compute()).items()}
