"""Training curves for the card: the run's TensorBoard scalars, drawn with matplotlib (Agg) as
inline SVG.

Event files (DIR/events/events.out.tfevents.*, written by `training.metrics_io.SummaryWriter`)
are TFRecord files of `Event` protos; they are read here with tensorboardX's proto module (a
runtime dependency already), so neither TensorFlow nor the tensorboard package is needed. A
`SessionLog.START` event at step T (a resumed run) drops the points at steps >= T read before it,
as TensorBoard's purge does.
"""

from __future__ import annotations

import io
import pathlib
import struct
from typing import Iterator

# The curves of the card: (title, tag) per panel; tags as training.loop writes them.
PANELS = (("training loss", "train/loss"), ("val BLEU-4", "val/bleu_4"),
          ("val clinical F1", "val/clinical_f1"))


def _records(path: pathlib.Path) -> Iterator[bytes]:
  """The payloads of a TFRecord file (length u64, its CRC u32, data, data CRC u32); a truncated
  last record (a file still being written) ends the iteration."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        return
      yield data


def read_scalars(events_dir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...] sorted by step} of every scalar in the event files of
  `events_dir` (empty when there are none)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  folder = pathlib.Path(events_dir)
  series: dict[str, dict[int, float]] = {}
  if not folder.is_dir():
    return {}
  for path in sorted(folder.glob("events.out.tfevents.*")):
    for data in _records(path):
      event = event_pb2.Event()
      event.ParseFromString(data)
      if (event.HasField("session_log")
          and event.session_log.status == event_pb2.SessionLog.START):
        for points in series.values():
          for step in [s for s in points if s >= event.step]:
            del points[step]
        continue
      if not event.HasField("summary"):
        continue
      for value in event.summary.value:
        if value.HasField("simple_value"):
          v = float(value.simple_value)
        elif value.HasField("tensor") and value.tensor.float_val:
          v = float(value.tensor.float_val[0])
        else:
          continue
        series.setdefault(value.tag, {})[int(event.step)] = v
  return {tag: sorted(points.items()) for tag, points in series.items()}


def curves_svg(scalars: dict[str, list[tuple[int, float]]]) -> str:
  """One SVG (a row of panels, PANELS order) of the curves; a panel without points says so."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cnx2rg-card",
                              "font.size": 9}):
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 2.4))
    try:
      for ax, (title, tag) in zip(axes, PANELS):
        points = scalars.get(tag, [])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if points:
          steps, values = zip(*points)
          ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
        else:
          ax.text(0.5, 0.5, f"no {tag} scalars", ha="center", va="center",
                  transform=ax.transAxes, color="gray")
      fig.tight_layout()
      buf = io.StringIO()
      fig.savefig(buf, format="svg", metadata={"Date": None})
    finally:
      plt.close(fig)
  svg = buf.getvalue()
  return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: it goes inside HTML
