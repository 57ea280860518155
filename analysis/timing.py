"""The timing harness of analysis/benchmark.py and analysis/kernels.py.

* :func:`loop`: a compiled ``run(N)`` of N iterations of ``state = body(state)``, the
  state carried in variables (so nothing is folded away and a call blocks until done);
* :func:`calibrate` and :func:`measure_group`: N chosen so that a run lasts at least
  ``min_time`` seconds, then the best of ``repeats`` runs, the repeats of a group of
  loops interleaved (a change of the machine's load affects them alike); :func:`timed`
  times one call;
* :class:`MemoryMeter`: peak memory over a stretch of code (TensorFlow's allocator, and
  the process's peak RSS on CPU);
* :func:`orthogonal` (inputs whose products keep their norm) and :func:`cpu_name` (the
  machine, for the reports).

It lives in ``analysis/``, not in ``ok_tf/``: only the analysis scripts time anything
(the library's own clocks, the progress line's steps/s and ``--max_minutes``, need no
harness), and the library should not carry benchmarking code.
"""

from __future__ import annotations

import math
import platform
import resource
import time

import tensorflow as tf

from ok_tf import training

# ----------------------------------------------------------------------------- timing


def timed(run, num) -> float:
  """Seconds of one call ``run(num)`` (which must block until its work is done)."""
  t0 = time.perf_counter()
  run(num)
  return time.perf_counter() - t0


def calibrate(run, min_time: float, steps: int = 0, multiple: int = 1) -> tuple[int, float]:
  """(N, compile seconds): ``run(multiple)`` compiles, then N makes one call ≥ min_time.

  N grows from ``multiple`` until a call takes ≥ max(0.2, min_time / 8) s and is then
  scaled to ``min_time`` (or N = ``steps`` rounded up to a multiple of ``multiple``).
  """
  compile_s = timed(run, multiple)
  if steps:
    return int(math.ceil(steps / multiple)) * multiple, compile_s
  num = multiple
  target = max(0.2, min_time / 8)
  while True:
    elapsed = timed(run, num)
    if elapsed >= target:
      break
    factor = 16 if elapsed < target / 16 else math.ceil(1.25 * target / elapsed)
    num = int(math.ceil(num * factor / multiple)) * multiple
  per_step = elapsed / num
  return max(multiple, int(math.ceil(min_time / per_step / multiple)) * multiple), compile_s


def measure_group(runners: dict, min_time: float, repeats: int, steps: int = 0,
                  multiples: dict | None = None) -> dict:
  """Best-of-``repeats`` seconds per step of each ``run(N)`` (which must block).

  The repeats are interleaved (full, estimator, bound, full, ...), so that a change of
  the machine's load during the measurement affects all of them alike.  A run that
  took less than 0.8·``min_time`` (the first calls after the compile can be slow and
  spoil the calibration) has its N scaled up and its times restarted (twice at most).
  Returns ``{name: {"steps", "times_s", "sec_per_step", "compile_s"}}``.
  """
  multiples = multiples or {}
  plan = {name: calibrate(run, min_time, steps, multiples.get(name, 1))
          for name, run in runners.items()}
  nums = {name: p[0] for name, p in plan.items()}
  times = {name: [] for name in runners}
  rescaled = {name: 0 for name in runners}
  while any(len(t) < max(1, repeats) for t in times.values()):
    for name, run in runners.items():
      if len(times[name]) >= max(1, repeats):
        continue
      elapsed = timed(run, nums[name])
      if not steps and elapsed < 0.8 * min_time and rescaled[name] < 2:
        mult = multiples.get(name, 1)
        nums[name] = int(math.ceil(nums[name] * min_time / elapsed / mult)) * mult
        times[name] = []
        rescaled[name] += 1
        continue
      times[name].append(elapsed)
  out = {}
  for name in runners:
    out[name] = {"steps": nums[name], "times_s": [round(t, 4) for t in times[name]],
                 "sec_per_step": min(times[name]) / nums[name],
                 "compile_s": round(plan[name][1], 3)}
  return out


def loop(body, init_state):
  """A compiled ``run(N)``: N iterations of ``state = body(state)``, state in variables."""
  holder = training.StateVariables(init_state)

  @tf.function
  def compiled(num):
    state = holder.read()
    for _ in tf.range(num):
      state = body(state)
    holder.assign(state)
    return tf.reduce_sum(tf.stack([tf.cast(tf.reduce_sum(t[:1]), tf.float32)
                                   for t in tf.nest.flatten(state)]))

  return lambda num: compiled(tf.constant(num, tf.int32)).numpy()


def orthogonal(batch, size, seed):
  """Random orthogonal [batch, size, size] matrices (products keep their norm)."""
  q, _ = tf.linalg.qr(tf.random.stateless_normal([batch, size, size], [seed, 1]))
  return q


def cpu_name() -> str:
  """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- memory


class MemoryMeter:
  """Peak memory over a stretch of code.

  ``peak_mem_bytes``: the peak of TensorFlow's allocator on the device
  (``tf.config.experimental.get_memory_info(device)['peak']``, reset before; on GPU and,
  in TF 2.21, on CPU too); on CPU also ``peak_rss_bytes``, the process's peak resident
  set size (VmHWM reset through /proc/self/clear_refs, else the lifetime maximum of
  ``resource.getrusage``), which includes the TensorFlow runtime and what the C
  allocator keeps from earlier rows, so it hardly measures one row.
  """

  def __init__(self, device: str):
    self.device = device.strip("/")           # "CPU:0" or "GPU:0"
    self.cpu = self.device.startswith("CPU")
    try:
      tf.config.experimental.get_memory_info(self.device)
      tf.config.experimental.reset_memory_stats(self.device)
      self.tf_stats = True
    except (ValueError, RuntimeError, tf.errors.OpError):
      self.tf_stats = False
    self.rss_resettable = self.cpu and self._reset_rss()
    notes = []
    if self.tf_stats:
      notes.append(f"peak_mem_bytes: TensorFlow allocator peak on {self.device} over a few "
                   "steps of the full step after its compile, only the trainer alive "
                   "(get_memory_info, reset before)")
    if self.cpu:
      notes.append("peak_rss_bytes: process peak RSS over the same steps ("
                   + ("VmHWM reset via /proc/self/clear_refs" if self.rss_resettable else
                      "resource.getrusage lifetime maximum")
                   + "); includes the TF runtime and freed memory the C allocator keeps, "
                   "so it is not a per-row measure")
    self.note = "; ".join(notes)

  @staticmethod
  def _reset_rss() -> bool:
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      return True
    except OSError:
      return False

  def reset(self):
    """Starts a new stretch: the peaks are reset."""
    if self.tf_stats:
      tf.config.experimental.reset_memory_stats(self.device)
    if self.rss_resettable:
      self._reset_rss()

  def _rss(self) -> int:
    if self.rss_resettable:
      with open("/proc/self/status") as f:
        for line in f:
          if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

  def current(self) -> int | None:
    """Bytes held by TensorFlow's allocator now (None without allocator statistics)."""
    if not self.tf_stats:
      return None
    return int(tf.config.experimental.get_memory_info(self.device)["current"])

  def peak(self) -> dict:
    """The peaks since :meth:`reset`: ``peak_mem_bytes`` (and ``peak_rss_bytes`` on CPU)."""
    out = {}
    if self.tf_stats:
      out["peak_mem_bytes"] = int(tf.config.experimental.get_memory_info(self.device)["peak"])
    if self.cpu:
      out["peak_rss_bytes"] = self._rss()
      out.setdefault("peak_mem_bytes", out["peak_rss_bytes"])
    return out
