"""`timed`: min and median wall and CPU seconds of a function, after warm-up calls; what the
side-by-side benchmark (r2gen_side_by_side) and its per-part tables (train_parts) report."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
  """Runs fn warmup times, then repeats timed times: min and median wall and CPU seconds."""
  for _ in range(warmup):
    fn()
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return {"wall_min": round(min(wall), 4), "wall_median": round(statistics.median(wall), 4),
          "cpu_min": round(min(cpu), 4), "cpu_median": round(statistics.median(cpu), 4),
          "repeats": repeats, "warmup": warmup}
