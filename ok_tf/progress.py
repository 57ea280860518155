"""The progress line of a training run: step, metrics, speed and time left.

    step 1200/5000 (24%) | level 7 | ema_bits 0.21 | loss_bits 0.3 (0.15 of baseline) | 154.3 steps/s | ETA 0:00:25

With a ``baseline`` (the task's reference loss, :mod:`ok_tf.tasks.base`) the loss column
``loss_column`` is shown with its ratio to it.

:class:`Progress` logs one such line per call of ``update`` and returns the row's
timing columns (``steps_per_sec``, ``wall_time``).
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Any

from absl import logging

from ok_tf import python_values


def format_metric(value: Any) -> str:
  """A metric as shown in the progress line: integers plain, other floats to 4 digits."""
  value = python_values.to_python(value)
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
      return str(int(value))
    return f"{value:.4g}"
  return str(value)


class Progress:
  """Logs one progress line per update() call (see the module docstring).

  Args:
    total_steps: the last step of the run.
    start_step: the step the run (re)starts from.
    wall_time_offset: wall time (s) already spent before start_step, e.g. the
      last logged wall_time of a resumed run; added to the returned wall_time.
    loss_column: the row's loss column (``loss_bits``, ``loss_mse``).
    baseline: the task's reference loss in that unit; its ratio is shown beside the loss.
  """

  SKIP = frozenset({"step", "steps_per_sec", "wall_time"})

  def __init__(self, total_steps: int, start_step: int = 0,
               wall_time_offset: float = 0.0, loss_column: str | None = None,
               baseline: float | None = None):
    self.total_steps = int(total_steps)
    self.loss_column, self.baseline = loss_column, baseline
    self._start_time = time.perf_counter()
    self._offset = float(wall_time_offset)
    self._last_time = self._start_time
    self._last_step = int(start_step)

  def update(self, step: int, metrics: dict | None = None) -> dict:
    """Logs a line; returns {"steps_per_sec", "wall_time"}.

    steps_per_sec is measured since the previous update (or the start);
    wall_time is the seconds since the start plus wall_time_offset.
    """
    now = time.perf_counter()
    step = int(step)
    dt = now - self._last_time
    dsteps = step - self._last_step
    rate = dsteps / dt if dt > 0 and dsteps > 0 else 0.0
    self._last_time, self._last_step = now, step
    wall = self._offset + (now - self._start_time)

    pct = 100.0 * step / self.total_steps if self.total_steps > 0 else 100.0
    parts = [f"step {step}/{self.total_steps} ({pct:.0f}%)"]
    for k, v in (metrics or {}).items():
      if k not in self.SKIP:
        parts.append(f"{k} {format_metric(v)}")
        if k == self.loss_column and self.baseline and v is not None:
          ratio = float(python_values.to_python(v)) / self.baseline
          parts[-1] += f" ({format_metric(ratio)} of baseline)"
    parts.append(f"{rate:.1f} steps/s")
    remaining = max(self.total_steps - step, 0)
    if rate > 0:
      parts.append(f"ETA {datetime.timedelta(seconds=round(remaining / rate))}")
    else:
      parts.append("ETA ?")
    logging.info(" | ".join(parts))
    return {"steps_per_sec": rate, "wall_time": wall}
