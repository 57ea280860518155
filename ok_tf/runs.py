"""Run directories: config, CSV logs, TensorBoard scalars, checkpoints, results.

Layout of a run directory written by :class:`RunDir`::

    RUN_DIR/
      config.json        the run's configuration (indent 2, sorted keys)
      metrics.csv        training log, one row per ``log_metrics`` call
      eval.csv           evaluation log, one row per ``log_eval`` call
      results.json       final results (``write_results``)
      tb/                TensorBoard event files (``scalars``)
      checkpoints/       latest checkpoints, ``ckpt-<step>`` (2 kept)
      best/              best-validation checkpoint, ``ckpt-<step>`` (1 kept)

TensorFlow is imported lazily, so the reading side (:func:`find_runs`,
:func:`load_run`, :func:`method_label`) works without loading it.

Typical use in a training script::

    run = RunDir(FLAGS.run_dir, config, resume=FLAGS.resume)
    run.checkpoint(model=model, optimizer=opt, rng=rng, state=state_var)
    start = run.restore_latest() if FLAGS.resume else None
    run.truncate_after(start)          # None: no checkpoint, drop every logged row
    start = start or 0
    progress = Progress(FLAGS.steps, start_step=start)
    for step in range(start + 1, FLAGS.steps + 1):
        ...
        if step % FLAGS.log_every == 0:
            row = {"step": step, ...}
            row.update(progress.update(step, row))
            run.log_metrics(row)
        if step % FLAGS.checkpoint_every == 0:
            run.save(step)
    run.write_results({...})
    run.close()
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import pathlib
import re
import time
from typing import Any, Iterable

from absl import logging

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
RESULTS_FILE = "results.json"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"

# Config keys that may differ between a run and its resumption.
RESUME_MAY_CHANGE = frozenset(
    {"steps", "log_every", "checkpoint_every", "eval_every", "resume", "max_minutes"})

# Config fields added after runs were already made: a stored config without them
# meant these values, so such runs still resume.
ABSENT_MEANS = {"strategy": "none", "devices": "", "cpu_devices": 0, "max_minutes": 0.0,
                "grad_scale": "mean"}

# Methods whose label carries the rank r of the approximation.
RANKED_METHODS = ("ok", "kf_avg")
# Methods whose label carries the truncation length T.
TRUNCATED_METHODS = ("tbptt",)
# Canonical order of methods in tables and legends.
METHOD_ORDER = ("ok", "kf_avg", "kf", "uoro", "rtrl", "tbptt")


class RunDirError(RuntimeError):
  """A run directory cannot be used as asked (would overwrite, config mismatch)."""


# ----------------------------------------------------------------------------
# Labels


def _fmt_int(value: Any) -> str:
  try:
    f = float(value)
  except (TypeError, ValueError):
    return str(value)
  return str(int(f)) if f == int(f) else f"{f:g}"


def method_label(config: dict) -> str:
  """Short label of a run's method: "ok (r=16)", "kf", "tbptt (T=25)", ...

  The rank is shown for the methods in RANKED_METHODS ("ok", "kf_avg"), the
  truncation length for "tbptt"; other methods are shown by name alone.
  """
  method = str(config.get("method", "?"))
  if method in RANKED_METHODS and config.get("rank") is not None:
    return f"{method} (r={_fmt_int(config['rank'])})"
  if method in TRUNCATED_METHODS and config.get("truncation") is not None:
    return f"{method} (T={_fmt_int(config['truncation'])})"
  return method


def method_sort_key(config: dict) -> tuple:
  """Sort key: canonical method order, then rank / truncation."""
  method = str(config.get("method", "?"))
  idx = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
  def num(key):
    try:
      return float(config.get(key))
    except (TypeError, ValueError):
      return 0.0
  return (idx, method, num("rank"), num("truncation"))


# ----------------------------------------------------------------------------
# Small helpers


def _plain(value: Any) -> Any:
  """Converts tensors / numpy scalars / paths to plain Python values."""
  if hasattr(value, "numpy"):
    value = value.numpy()
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  if isinstance(value, pathlib.PurePath):
    return str(value)
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def _normalise(config: dict) -> dict:
  """What the config looks like after a round trip through config.json."""
  return json.loads(json.dumps(_plain(dict(config)), sort_keys=True))


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(_plain(obj), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def parse_value(text: str) -> Any:
  """CSV cell -> int, float, None (empty cell) or the string itself."""
  if text is None:
    return None
  s = text.strip()
  if s == "":
    return None
  try:
    return int(s)
  except ValueError:
    pass
  try:
    return float(s)
  except ValueError:
    return text


def read_csv(path) -> list[dict]:
  """Rows of a CSV log with numbers parsed; [] if the file does not exist."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


class _CsvLog:
  """Append-only CSV file; the header is the keys of the first row ever written,
  followed by the ``expected`` columns that row lacks (columns logged only on some rows)."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    self._file = None
    self._writer = None
    self._fields: list[str] | None = None
    self._warned: set[str] = set()
    self.expected: list[str] = []

  def _open(self, first_row: dict) -> None:
    header = None
    if self.path.exists() and self.path.stat().st_size > 0:
      with open(self.path, newline="") as f:
        header = next(csv.reader(f), None)
    self._file = open(self.path, "a", newline="")
    if header:
      self._fields = header
    else:
      self._fields = list(first_row.keys()) + [c for c in self.expected if c not in first_row]
    self._writer = csv.DictWriter(self._file, fieldnames=self._fields,
                                  extrasaction="ignore", restval="")
    if not header:
      self._writer.writeheader()

  def write(self, row: dict) -> None:
    row = {str(k): _plain(v) for k, v in row.items()}
    if self._file is None:
      self._open(row)
    extra = set(row) - set(self._fields) - self._warned
    if extra:
      logging.warning("%s: columns %s are not in the header %s; dropped.",
                      self.path.name, sorted(extra), self._fields)
      self._warned |= extra
    self._writer.writerow(row)
    self._file.flush()

  def truncate_after(self, step: int | None) -> int:
    """Drops rows with step > `step` (all rows if step is None); returns #dropped."""
    self.close()
    if not self.path.exists():
      return 0
    with open(self.path, newline="") as f:
      reader = csv.reader(f)
      header = next(reader, None)
      rows = list(reader)
    if not header:
      return 0
    if step is None:
      kept = []
    else:
      col = header.index("step") if "step" in header else None
      if col is None:
        raise RunDirError(f"{self.path} has no 'step' column; cannot truncate it")
      kept = [r for r in rows
              if not (len(r) > col and r[col].strip()
                      and float(r[col]) > step)]
    tmp = self.path.with_name(self.path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(header)
      w.writerows(kept)
    os.replace(tmp, self.path)
    return len(rows) - len(kept)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    self._file = None
    self._writer = None
    self._fields = None


def _scalar_metadata() -> bytes:
  """SummaryMetadata of TensorBoard's scalars plugin (as tf.summary.scalar)."""
  from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
  return summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
          plugin_name="scalars", content=b""),
      data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()


def _step_of(checkpoint_path: str | None) -> int | None:
  if not checkpoint_path:
    return None
  m = re.search(r"-(\d+)$", checkpoint_path)
  return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------
# RunDir


class RunDir:
  """One training run's directory (see the module docstring for the layout).

  Args:
    path: the directory; created if needed.
    config: the run's configuration (JSON-serialisable; numpy scalars, tuples
      and paths are converted).
    resume: continue the run already in `path`. Its stored config must equal
      `config` except for the keys in RESUME_MAY_CHANGE. If `path` holds no run
      yet, a new one is started.

  Raises:
    RunDirError: `path` holds a run and resume is False, or resume is True and
      the configs differ in other keys.
  """

  def __init__(self, path, config: dict, resume: bool = False):
    self.path = pathlib.Path(path)
    self.path.mkdir(parents=True, exist_ok=True)
    config_path = self.path / CONFIG_FILE
    new = _normalise(config)
    existed = config_path.exists()
    if existed:
      if not resume:
        raise RunDirError(
            f"run directory {self.path} already holds a run; pass --resume to "
            f"continue it or choose another --run_dir")
      with open(config_path) as f:
        stored = json.load(f)
      keys = (set(stored) | set(new)) - RESUME_MAY_CHANGE
      missing = object()
      diff = sorted(k for k in keys
                    if stored.get(k, ABSENT_MEANS.get(k, missing)) != new.get(k, missing))
      if diff:
        details = ", ".join(
            f"{k} (stored {stored.get(k, '<absent>')!r}, "
            f"new {new.get(k, '<absent>')!r})" for k in diff)
        raise RunDirError(
            f"cannot resume the run in {self.path}: its config differs in "
            f"{details}; only {sorted(RESUME_MAY_CHANGE)} may change on resume")
      merged = dict(stored)
      merged.update(new)
      new = merged
    _write_json(config_path, new)
    self.config = new
    self.resumed = existed  # True when continuing a run already in `path`
    self._metrics = _CsvLog(self.path / METRICS_FILE)
    self._eval = _CsvLog(self.path / EVAL_FILE)
    self._tb_writer = None
    self._ckpt = None
    self._manager = None
    self._best_manager = None

  def __repr__(self):
    return f"RunDir({str(self.path)!r})"

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # -- logs ------------------------------------------------------------------

  def expect_metrics(self, columns) -> None:
    """Columns that only some metrics rows carry (e.g. a periodic validation); they
    join the header of a new metrics.csv, so no later row loses them."""
    self._metrics.expected += [str(c) for c in columns if str(c) not in self._metrics.expected]

  def log_metrics(self, row: dict) -> None:
    """Appends a row to metrics.csv (header = keys of the first row + expected columns; flushed)."""
    self._metrics.write(row)

  def log_eval(self, row: dict) -> None:
    """Appends a row to eval.csv (header = keys of the first row; flushed)."""
    self._eval.write(row)

  def truncate_after(self, step: int | None) -> None:
    """Drops rows with step > `step` from metrics.csv and eval.csv.

    Call it after restoring a checkpoint on resume so the CSVs hold exactly
    what an uninterrupted run would hold. step=None (no checkpoint was
    restored) drops every row.
    """
    dropped = self._metrics.truncate_after(step) + self._eval.truncate_after(step)
    if dropped:
      logging.info("%s: dropped %d logged rows after step %s", self.path,
                   dropped, step)

  def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
    """Writes TensorBoard scalars `prefix/name` to path/tb.

    The events are what tf.summary.scalar writes, but go through
    tf.summary.write so that the tensorboard package need not be installed.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._tb_writer is None:
      self._tb_writer = tf.summary.create_file_writer(str(self.path / TB_DIR))
    metadata = _scalar_metadata()
    with self._tb_writer.as_default():
      for name, value in values.items():
        value = _plain(value)
        if value is None:
          continue
        tag = f"{prefix}/{name}" if prefix else str(name)
        tf.summary.write(tag, tf.constant(float(value), tf.float32),
                         step=int(step), metadata=metadata)

  def write_results(self, results: dict) -> None:
    """Writes results.json (indent 2, sorted keys; replaced atomically)."""
    _write_json(self.path / RESULTS_FILE, results)

  # -- checkpoints -----------------------------------------------------------

  def checkpoint(self, **trackables) -> None:
    """Registers what is checkpointed: any tf.train.Checkpoint-able objects.

    E.g. run.checkpoint(model=model, optimizer=opt, rng=generator, h=state).
    A Keras optimizer may be restored before it is built (restore on create).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not trackables:
      raise ValueError("checkpoint() needs at least one object to track")
    self._ckpt = tf.train.Checkpoint(**trackables)
    self._manager = tf.train.CheckpointManager(
        self._ckpt, str(self.path / CHECKPOINT_DIR), max_to_keep=2)
    self._best_manager = tf.train.CheckpointManager(
        self._ckpt, str(self.path / BEST_DIR), max_to_keep=1)

  def _need_checkpoint(self):
    if self._ckpt is None:
      raise RunDirError("call RunDir.checkpoint(...) before saving or restoring")

  def save(self, step: int) -> str:
    """Saves path/checkpoints/ckpt-<step> (2 kept); returns its prefix."""
    self._need_checkpoint()
    return self._manager.save(checkpoint_number=int(step))

  def save_best(self, step: int) -> str:
    """Saves path/best/ckpt-<step> (1 kept); returns its prefix."""
    self._need_checkpoint()
    return self._best_manager.save(checkpoint_number=int(step))

  def _restore(self, manager, what: str) -> int | None:
    self._need_checkpoint()
    latest = manager.latest_checkpoint
    if latest is None:
      return None
    status = self._ckpt.restore(latest)
    status.assert_existing_objects_matched()
    step = _step_of(latest)
    logging.info("%s: restored %s checkpoint %s (step %s)", self.path, what,
                 latest, step)
    return step

  def restore_latest(self) -> int | None:
    """Restores the latest checkpoint; returns its step, None if there is none."""
    return self._restore(self._manager, "latest")

  def restore_best(self) -> int | None:
    """Restores the best checkpoint; returns its step, None if there is none."""
    return self._restore(self._best_manager, "best")

  @property
  def latest_step(self) -> int | None:
    self._need_checkpoint()
    return _step_of(self._manager.latest_checkpoint)

  @property
  def best_step(self) -> int | None:
    self._need_checkpoint()
    return _step_of(self._best_manager.latest_checkpoint)

  def close(self) -> None:
    """Closes the CSV files and flushes / closes the TensorBoard writer."""
    self._metrics.close()
    self._eval.close()
    if self._tb_writer is not None:
      self._tb_writer.flush()
      self._tb_writer.close()
      self._tb_writer = None


# ----------------------------------------------------------------------------
# Reading runs


def find_runs(paths: Iterable) -> list[pathlib.Path]:
  """Run directories under `paths`.

  Each path is a run directory (it holds config.json) or a folder searched
  recursively for config.json files. The result is sorted and free of
  duplicates. A path that does not exist raises FileNotFoundError.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  found = []
  for p in paths:
    p = pathlib.Path(p)
    if not p.exists():
      raise FileNotFoundError(f"no such run directory or folder: {p}")
    if p.is_file() and p.name == CONFIG_FILE:
      found.append(p.parent)
    elif (p / CONFIG_FILE).is_file():
      found.append(p)
    elif p.is_dir():
      found.extend(c.parent for c in p.rglob(CONFIG_FILE) if c.is_file())
  unique = {}
  for r in found:
    unique.setdefault(r.resolve(), r)
  return sorted(unique.values(), key=str)


def load_run(path) -> dict:
  """Everything a run directory holds, for analysis.

  Returns {"config": dict, "metrics": [row...], "eval": [row...],
  "results": dict or None, "path": str}; CSV numbers are parsed to int/float
  (empty cells to None).
  """
  path = pathlib.Path(path)
  with open(path / CONFIG_FILE) as f:
    config = json.load(f)
  results = None
  if (path / RESULTS_FILE).exists():
    with open(path / RESULTS_FILE) as f:
      results = json.load(f)
  return {
      "config": config,
      "metrics": read_csv(path / METRICS_FILE),
      "eval": read_csv(path / EVAL_FILE),
      "results": results,
      "path": str(path),
  }


# ----------------------------------------------------------------------------
# Progress


def _fmt_metric(value: Any) -> str:
  value = _plain(value)
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
  """Logs one progress line per update() call.

    step 1200/5000 (24%) | level 7 | ema_bits 0.21 | 154.3 steps/s | ETA 0:00:25

  Args:
    total_steps: the last step of the run.
    start_step: the step the run (re)starts from.
    wall_time_offset: wall time (s) already spent before start_step, e.g. the
      last logged wall_time of a resumed run; added to the returned wall_time.
  """

  SKIP = frozenset({"step", "steps_per_sec", "wall_time"})

  def __init__(self, total_steps: int, start_step: int = 0,
               wall_time_offset: float = 0.0):
    self.total_steps = int(total_steps)
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
        parts.append(f"{k} {_fmt_metric(v)}")
    parts.append(f"{rate:.1f} steps/s")
    remaining = max(self.total_steps - step, 0)
    if rate > 0:
      parts.append(f"ETA {datetime.timedelta(seconds=round(remaining / rate))}")
    else:
      parts.append("ETA ?")
    logging.info(" | ".join(parts))
    return {"steps_per_sec": rate, "wall_time": wall}
