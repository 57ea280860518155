"""Run directories: one layout, written by :class:`RunDir` and read by :class:`Run`.

Layout (the file names are the constants below)::

    RUN_DIR/
      config.json        the run's configuration (indent 2, sorted keys)
      task.json          the task's description: input and output specs, baselines,
                         parameters (``write_task``; ``Run.task``)
      metrics.csv        training log, one row per ``log_metrics`` call
      eval.csv           evaluation log, one row per ``log_eval`` call
      results.json       final results (``write_results``), only once the run finished
      vocab.json         PTB and any text: the symbols, id → symbol (``write_vocabulary``)
      provenance.json    per start or resume: package version, git commit, TensorFlow,
                         devices (:mod:`ok_tf.provenance`)
      .lock              held by the process writing the run (:mod:`ok_tf.lock`)
      tb/                TensorBoard event files (``scalars``)
      checkpoints/       latest checkpoints, ``ckpt-<step>`` (2 kept; unreadable ones found
                         on resume are moved to checkpoints/unreadable/)
      best/              best-validation checkpoint, ``ckpt-<step>`` (1 kept)
      model.keras        the finished run's model as a Keras file (``Run.export_model``:
                         the best checkpoint's weights if there is one, else the last)
      workers/worker-<w>/  --strategy=multi_worker: worker w's checkpoints (:mod:`ok_tf.multi_worker`)

The writer is driven by :func:`ok_tf.experiment.train` (open, checkpoint, log, resume,
results, close). Everything that reads run directories (analysis, studies, noise
measurements on checkpoints) goes through the reader: ``Run(path)`` gives ``config``,
``metrics`` and ``eval`` rows, ``results``, ``vocabulary()``, the checkpoints' steps and
``load_model(which)`` (a :class:`ok_tf.models.RecurrentModel`, a Keras model);
:func:`find_runs` finds run directories under folders.
TensorFlow is imported lazily, so reading logs works without loading it.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import pathlib
import re
from typing import Any, Iterable

from absl import logging

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
RESULTS_FILE = "results.json"
TASK_FILE = "task.json"
VOCAB_FILE = "vocab.json"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
MODEL_FILE = "model.keras"
PROVENANCE_FILE = "provenance.json"
# The small files of a run (what a study collects; checkpoints and TensorBoard excluded).
LOG_FILES = (CONFIG_FILE, TASK_FILE, METRICS_FILE, EVAL_FILE, RESULTS_FILE, PROVENANCE_FILE)

class RunDirError(RuntimeError):
  """A run directory cannot be used as asked (would overwrite, config mismatch)."""


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


def step_of(checkpoint_path: str | None) -> int | None:
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
    if resume and not existed:
      logging.warning("%s holds no run to resume: starting a new run there", self.path)
    if existed:
      if not resume:
        raise RunDirError(
            f"run directory {self.path} already holds a run; pass --resume to "
            f"continue it or choose another --run_dir")
      with open(config_path) as f:
        stored = json.load(f)
      from ok_tf import config as config_lib  # pylint: disable=g-import-not-at-top
      new = config_lib.merge_resumed(stored, new, self.path)
    _write_json(config_path, new)
    self.config = new
    self.resumed = existed  # True when continuing a run already in `path`
    self._metrics = _CsvLog(self.path / METRICS_FILE)
    self._eval = _CsvLog(self.path / EVAL_FILE)
    self._tb_writer = None
    self._trackables = {}
    self._ckpt = None
    self._manager = None
    self._best_manager = None
    self.not_restored = ()  # names the last restore left at their values (allow_missing)

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

  def write_task(self, description: dict) -> None:
    """Writes task.json: a task's ``describe()`` (its specs, baselines and parameters).

    Raises:
      RunDirError: the run already records other input or output specs (resumed with
        another task or data).
    """
    path = self.path / TASK_FILE
    new = _normalise(description)
    if path.exists():
      with open(path) as f:
        stored = json.load(f)
      for key in ("inputs", "outputs"):
        if stored.get(key) != new.get(key):
          raise RunDirError(
              f"the run in {self.path} records {key} {stored.get(key)} and this task has "
              f"{new.get(key)}: resume it with the same task and data, or choose another "
              "--run_dir")
    _write_json(path, new)

  def write_vocabulary(self, vocabulary) -> None:
    """Writes vocab.json: ``vocabulary.to_json()`` (an :class:`ok_tf.data.vocabulary.Vocabulary`).

    Raises:
      RunDirError: the run already records a different vocabulary (resumed on another text).
    """
    path = self.path / VOCAB_FILE
    new = _normalise(vocabulary.to_json())
    if path.exists():
      with open(path) as f:
        stored = json.load(f)
      if stored != new:
        raise RunDirError(
            f"the run in {self.path} was trained on {len(stored.get('symbols', []))} symbols "
            f"and this text has a different set of {len(new['symbols'])}: resume it with "
            "the same training text, or choose another --run_dir")
    _write_json(path, new)

  # -- checkpoints -----------------------------------------------------------

  def checkpoint(self, **trackables) -> None:
    """Registers what is checkpointed: any tf.train.Checkpoint-able objects.

    E.g. run.checkpoint(model=model, optimizer=opt, rng=generator, h=state).
    A Keras optimizer may be restored before it is built (restore on create).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not trackables:
      raise ValueError("checkpoint() needs at least one object to track")
    self._trackables = dict(trackables)
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

  def _restore(self, manager, what: str, allow_missing: Iterable[str]) -> int | None:
    self._need_checkpoint()
    latest = manager.latest_checkpoint
    self.not_restored = ()
    if latest is None:
      return None
    return self._restore_path(latest, what, allow_missing)

  def _restore_path(self, latest: str, what: str, allow_missing: Iterable[str]) -> int | None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(latest)}
    missing = tuple(k for k in allow_missing if k in self._trackables and k not in saved)
    ckpt = self._ckpt
    if missing:
      ckpt = tf.train.Checkpoint(
          **{k: v for k, v in self._trackables.items() if k not in missing})
      logging.info("%s: checkpoint %s predates %s; they keep their values", self.path,
                   latest, ", ".join(missing))
    status = ckpt.restore(latest)
    status.assert_existing_objects_matched()
    self.not_restored = missing
    step = step_of(latest)
    logging.info("%s: restored %s checkpoint %s (step %s)", self.path, what,
                 latest, step)
    return step

  def restore_latest(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the latest checkpoint; returns its step, None if there is none.

    allow_missing: names given to checkpoint() that a checkpoint written before they
    were checkpointed may lack: they keep their values and :attr:`not_restored` names
    them (any other missing object fails the restore).
    """
    return self._restore(self._manager, "latest", allow_missing)

  def restore_readable(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the newest checkpoint in checkpoints/ that can be read; returns its step,
    None if there is none (as :meth:`restore_latest`).

    A checkpoint that cannot be read (a checksum mismatch, a truncated or missing file) is
    reported in one line and the one before it is tried (:func:`restore_newest_readable`);
    the unreadable ones are moved to checkpoints/unreadable/.

    Raises:
      RunDirError: there are checkpoints and none of them can be read.
    """
    self._need_checkpoint()
    self.not_restored = ()
    step = restore_newest_readable(
        self._manager, lambda prefix: self._restore_path(prefix, "latest", allow_missing),
        self.path)
    if step is not None:   # the folder's state file may have changed: read it again
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._manager = tf.train.CheckpointManager(
          self._ckpt, str(self.path / CHECKPOINT_DIR), max_to_keep=2)
    return step

  def restore_best(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the best checkpoint; returns its step, None if there is none (as restore_latest)."""
    return self._restore(self._best_manager, "best", allow_missing)

  @property
  def latest_step(self) -> int | None:
    self._need_checkpoint()
    return step_of(self._manager.latest_checkpoint)

  @property
  def best_step(self) -> int | None:
    self._need_checkpoint()
    return step_of(self._best_manager.latest_checkpoint)

  def close(self) -> None:
    """Closes the CSV files and flushes / closes the TensorBoard writer."""
    self._metrics.close()
    self._eval.close()
    if self._tb_writer is not None:
      self._tb_writer.flush()
      self._tb_writer.close()
      self._tb_writer = None


# Errors of a checkpoint that cannot be read: tf.errors.OpError (DataLossError for a
# checksum mismatch, NotFoundError for a missing file, ...) and, for a truncated data
# file, IndexError ("Read less bytes than requested").
UNREADABLE_DIR = "unreadable"


def restore_newest_readable(manager, restore, run_dir) -> int | None:
  """``restore(prefix)`` for ``manager``'s checkpoints, newest first, until one succeeds.

  Every checkpoint that cannot be read is reported in one line and, once an older one is
  restored, moved with its files to ``<manager's folder>/unreadable/`` (so the folder and
  its state file list only readable checkpoints, none newer than the run's state).
  Returns ``restore``'s value (a step), None if there is no checkpoint.

  Raises:
    RunDirError: there are checkpoints and none can be read (one line naming them).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  candidates = list(reversed(manager.checkpoints))
  if not candidates:
    return None
  bad = []
  for prefix in candidates:
    try:
      read_every_tensor(prefix)
      step = restore(prefix)
    except (tf.errors.OpError, IndexError) as e:
      reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
      logging.warning("%s: checkpoint %s cannot be read (%s); trying the one before",
                      run_dir, pathlib.Path(prefix).name, reason)
      bad.append(prefix)
      continue
    if bad:
      _set_aside(manager.directory, bad, keep=prefix, all_prefixes=candidates)
    return step
  names = ", ".join(pathlib.Path(p).name for p in bad)
  raise RunDirError(f"no checkpoint of {run_dir} can be read ({names}: see the warnings "
                    f"above): --resume cannot continue this run; start it again under "
                    f"another --run_dir")


def read_every_tensor(prefix: str) -> None:
  """Reads every tensor of checkpoint ``prefix``, so that a checksum mismatch or a short
  file anywhere in it raises (a restore reads only the tensors it assigns at once)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(prefix)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


def _set_aside(directory, bad, keep: str, all_prefixes) -> None:
  """Moves the files of the checkpoints ``bad`` to directory/unreadable/ and rewrites the
  folder's state file to list the readable checkpoints, ``keep`` the latest."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(directory)
  aside = folder / UNREADABLE_DIR
  aside.mkdir(exist_ok=True)
  for prefix in bad:
    for f in folder.glob(pathlib.Path(prefix).name + ".*"):
      os.replace(f, aside / f.name)
  kept = [p for p in reversed(all_prefixes) if p not in bad]
  tf.compat.v1.train.update_checkpoint_state(str(folder), keep, all_model_checkpoint_paths=kept)
  logging.info("%s: moved the unreadable checkpoint(s) %s to %s; continuing from %s",
                  folder.parent, ", ".join(pathlib.Path(p).name for p in bad), aside,
                  pathlib.Path(keep).name)


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


def is_run(path) -> bool:
  """Whether `path` is a run directory (it holds config.json)."""
  return (pathlib.Path(path) / CONFIG_FILE).is_file()


def _checkpoint_steps(folder: pathlib.Path) -> dict[int, str]:
  """{step: prefix} of the ckpt-<step> checkpoints in `folder` ({} if there is none)."""
  found = {}
  for index in folder.glob("ckpt-*.index"):
    prefix = str(index)[:-len(".index")]
    step = step_of(prefix)
    if step is not None:
      found[step] = prefix
  return found


class Run:
  """A run directory as written by :class:`RunDir`, read (see the module docstring).

  The files are read on first use and kept: a Run is a snapshot, make a new one to
  see rows logged since. TensorFlow is imported only by :meth:`load_model`.

  Args:
    path: the run directory.

  Raises:
    FileNotFoundError: `path` holds no config.json.
  """

  def __init__(self, path):
    self.path = pathlib.Path(path)
    if not is_run(self.path):
      raise FileNotFoundError(f"{self.path} is not a run directory (it has no {CONFIG_FILE})")

  def __repr__(self):
    return f"Run({str(self.path)!r})"

  @functools.cached_property
  def config(self) -> dict:
    """config.json."""
    with open(self.path / CONFIG_FILE) as f:
      return json.load(f)

  @functools.cached_property
  def metrics(self) -> list[dict]:
    """The rows of metrics.csv, numbers parsed (empty cells None); [] without the file."""
    return read_csv(self.path / METRICS_FILE)

  @functools.cached_property
  def eval(self) -> list[dict]:
    """The rows of eval.csv, numbers parsed; [] without the file."""
    return read_csv(self.path / EVAL_FILE)

  @functools.cached_property
  def results(self) -> dict | None:
    """results.json, None while the run has not finished."""
    if not (self.path / RESULTS_FILE).exists():
      return None
    with open(self.path / RESULTS_FILE) as f:
      return json.load(f)

  @property
  def finished(self) -> bool:
    """Whether the run reached its last step (it wrote results.json)."""
    return (self.path / RESULTS_FILE).exists()

  def vocabulary(self):
    """The symbols of a text task as an :class:`ok_tf.data.vocabulary.Vocabulary`: vocab.json,
    else (a PTB run that records none) PTB's for the config's tokenisation; None for a run
    of another task without vocab.json (the copy task)."""
    path = self.path / VOCAB_FILE
    if path.exists():
      from ok_tf.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
      with open(path) as f:
        return vocabulary_lib.Vocabulary.from_json(json.load(f))
    if self.config.get("task") == "ptb":
      from ok_tf.data import ptb  # pylint: disable=g-import-not-at-top
      return ptb.vocabulary(self.config.get("tokenization", ptb.DEFAULT_TOKENIZATION))
    return None

  def task(self) -> dict | None:
    """task.json (the task's ``describe()``), or None for a run that records none."""
    path = self.path / TASK_FILE
    if not path.exists():
      return None
    with open(path) as f:
      return json.load(f)

  def specs(self):
    """(input spec, output spec) of the run's model (:mod:`ok_tf.specs`): task.json's,
    else (a run that records none) symbols and classes of :attr:`vocab_size`; None if
    neither is known."""
    from ok_tf import specs  # pylint: disable=g-import-not-at-top
    task = self.task()
    if task is not None and "inputs" in task and "outputs" in task:
      return specs.from_json(task["inputs"], "inputs"), specs.from_json(task["outputs"], "outputs")
    size = self.vocab_size
    if size is None:
      return None
    return specs.Symbols(size), specs.Classes(size)

  def log_files(self) -> list[pathlib.Path]:
    """The run's small files (config, CSV logs, results) that exist, in LOG_FILES order."""
    return [self.path / name for name in LOG_FILES if (self.path / name).exists()]

  # -- checkpoints -----------------------------------------------------------

  @property
  def checkpoints(self) -> dict[int, str]:
    """{step: prefix} of every checkpoint in checkpoints/ and best/, by step."""
    found = _checkpoint_steps(self.path / BEST_DIR)
    found.update(_checkpoint_steps(self.path / CHECKPOINT_DIR))
    return dict(sorted(found.items()))

  @property
  def latest_step(self) -> int | None:
    """Step of the latest checkpoint in checkpoints/, None if there is none."""
    return max(_checkpoint_steps(self.path / CHECKPOINT_DIR), default=None)

  @property
  def best_step(self) -> int | None:
    """Step of the best-validation checkpoint in best/, None if there is none."""
    return max(_checkpoint_steps(self.path / BEST_DIR), default=None)

  def checkpoint(self, which: str | int | None = None) -> tuple[str, int]:
    """(prefix, step) of a checkpoint: "best", "latest", a step, or None (best, else latest).

    Raises:
      FileNotFoundError: the run has no such checkpoint.
    """
    if which is None:
      step = self.best_step if self.best_step is not None else self.latest_step
    elif which in ("best", "latest"):
      step = self.best_step if which == "best" else self.latest_step
    else:
      step = int(which)
    found = self.checkpoints
    if step not in found:
      what = {None: "best or latest", "best": "best", "latest": "latest"}.get(
          which, f"step {which}")
      raise FileNotFoundError(f"no {what} checkpoint in {self.path}")
    return found[step], step

  @property
  def vocab_size(self) -> int | None:
    """V of a language task: the symbols of task.json's input spec when its outputs are
    classes of the same size, else the size of its :meth:`vocabulary` (text tasks), copy 4;
    None if unknown (a text run without vocab.json) or not a language task."""
    task = self.task()
    if task is not None and "inputs" in task:
      inputs, outputs = task["inputs"], task.get("outputs")
      if inputs.get("kind") == "symbols" and outputs == {"kind": "classes", "size": inputs["size"]}:
        return int(inputs["size"])
      return None
    vocabulary = self.vocabulary()
    if vocabulary is not None:
      return vocabulary.size
    if self.config.get("task") == "copy":
      from ok_tf.tasks import copy as copy_task  # pylint: disable=g-import-not-at-top
      return copy_task.VOCAB_SIZE
    return None

  def build_model(self, dtype: str | None = None, vocab_size: int | None = None):
    """A new model of the run's shape (cell, units, specs) with fresh weights.

    Args:
      dtype: the model's dtype (default: the run's).
      vocab_size: V of a language model; default :meth:`specs` (task.json, else
        vocab.json, else the config's task).

    Raises:
      ValueError: the specs are neither given nor known.
    """
    from ok_tf import models  # pylint: disable=g-import-not-at-top
    config = self.config
    dtype = dtype or config.get("dtype", "float32")
    cell, units = config.get("cell", "rhn"), int(config["units"])
    if vocab_size:
      return models.RecurrentModel(cell, units, int(vocab_size), dtype=dtype)
    found = self.specs()
    if found is None:
      raise ValueError(f"{self.path}: the model's inputs and outputs are unknown (no "
                       "task.json or vocab.json, and the config's task is "
                       f"{config.get('task')!r}): pass vocab_size")
    return models.RecurrentModel(cell, units, inputs=found[0], outputs=found[1], dtype=dtype)

  def load_model(self, which: str | int | None = None, dtype: str | None = None,
                 vocab_size: int | None = None):
    """The run's model with the weights of one of its checkpoints; returns (model, step).

    Args:
      which: "best", "latest", a checkpoint's step, None (best if there is one, else
        latest), or "init": the run's initial weights (its config's seed), step 0.
      dtype: the dtype of the returned model (default: the run's); weights are cast.
      vocab_size: V; default :attr:`vocab_size` (vocab.json, else the config's task).

    Raises:
      FileNotFoundError: the run has no such checkpoint.
      ValueError: V is neither given nor known.
      AssertionError: the checkpoint does not hold this model's weights.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    config = self.config
    run_dtype = config.get("dtype", "float32")

    def build(dt):
      return self.build_model(dt, vocab_size)

    if which == "init":
      import keras  # pylint: disable=g-import-not-at-top
      keras.utils.set_random_seed(int(config.get("seed", 0)))
      source, step = build(run_dtype), 0
    else:
      source = build(run_dtype)
      prefix, step = self.checkpoint(which)
      status = tf.train.Checkpoint(model=source).restore(prefix)
      status.assert_existing_objects_matched()   # every weight of the model was in it
      status.expect_partial()                    # the rest (optimiser, states) is not needed
    if dtype is None or tf.as_dtype(dtype) == tf.as_dtype(run_dtype):
      return source, step
    model = build(dtype)
    for target, value in zip(model.weights, source.weights):
      target.assign(tf.cast(value, target.dtype))
    return model, step

  @property
  def model_file(self) -> pathlib.Path:
    """path/model.keras (written by :meth:`export_model`; it may not exist)."""
    return self.path / MODEL_FILE

  def export_model(self, which: str | int | None = None,
                   vocab_size: int | None = None) -> pathlib.Path:
    """Saves the model of checkpoint ``which`` (default: best, else latest) as
    path/model.keras, loadable with ``keras.models.load_model``; returns the path.
    ``vocab_size`` as in :meth:`load_model`."""
    model, _ = self.load_model(which, vocab_size=vocab_size)
    model.save(self.model_file)
    return self.model_file
