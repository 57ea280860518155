"""The directory of a run being trained: :class:`RunDir`.

``RunDir.create(path, config)`` starts a run (refusing a directory that holds one),
``RunDir.resume(path, config, merge)`` continues one (its stored config merged with the new
by ``merge``, :func:`ok_tf.config.merge_resumed` for training runs). A RunDir writes
through its parts: the CSV logs and TensorBoard scalars (:mod:`ok_tf.rundir.log`) and the
checkpoints (:mod:`ok_tf.rundir.checkpoints`), under the layout of
:mod:`ok_tf.rundir.layout`. It is driven by :func:`ok_tf.experiment.train` (open,
checkpoint, log, resume, results, close).
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterable

from absl import logging

from ok_tf.rundir import checkpoints as checkpoints_lib
from ok_tf.rundir import layout
from ok_tf.rundir import log


def same_config(stored: dict, new: dict, run_dir) -> dict:
  """The merge of :meth:`RunDir.resume` that allows no change of the config."""
  if stored != new:
    diff = sorted(k for k in set(stored) | set(new) if stored.get(k) != new.get(k))
    raise layout.RunDirError(f"cannot resume the run in {run_dir}: its config differs in "
                             f"{', '.join(diff)}; choose another --run_dir")
  return new


class RunDir:
  """One training run's directory, being written (see :mod:`ok_tf.rundir.layout`).

  Make one with :meth:`create` or :meth:`resume`; ``RunDir(path, config, resumed)`` only
  holds them (it writes nothing).
  """

  def __init__(self, path, config: dict, resumed: bool):
    self.path = pathlib.Path(path)
    self.config = config
    self.resumed = resumed   # True when continuing a run already in `path`
    self._metrics = log.CsvLog(self.path / layout.METRICS_FILE)
    self._eval = log.CsvLog(self.path / layout.EVAL_FILE)
    self._scalars = log.ScalarLog(self.path / layout.TB_DIR)
    self.checkpoints = checkpoints_lib.Checkpoints(self.path)

  @classmethod
  def create(cls, path, config: dict) -> "RunDir":
    """Starts a run in ``path`` (created if needed): writes its config.json.

    ``config``: JSON-serialisable (numpy scalars, tuples and paths are converted).

    Raises:
      RunDirError: ``path`` already holds a run.
    """
    path = pathlib.Path(path)
    if layout.is_run(path):
      raise layout.RunDirError(
          f"run directory {path} already holds a run; pass --resume to continue it or "
          "choose another --run_dir")
    path.mkdir(parents=True, exist_ok=True)
    config = layout.normalise(config)
    layout.write_json(path / layout.CONFIG_FILE, config)
    return cls(path, config, resumed=False)

  @classmethod
  def resume(cls, path, config: dict,
             merge: Callable[[dict, dict, pathlib.Path], dict] = same_config) -> "RunDir":
    """Continues the run in ``path``: config.json becomes ``merge(stored, config, path)``
    (which raises :class:`RunDirError` for a change it refuses). A ``path`` that holds
    no run yet is started (with a warning), so a job that always resumes can be restarted.
    """
    path = pathlib.Path(path)
    if not layout.is_run(path):
      logging.warning("%s holds no run to resume: starting a new run there", path)
      return cls.create(path, config)
    stored = layout.read_json(path / layout.CONFIG_FILE)
    config = merge(stored, layout.normalise(config), path)
    layout.write_json(path / layout.CONFIG_FILE, config)
    return cls(path, config, resumed=True)

  @classmethod
  def open(cls, path, config: dict, resume: bool, merge=same_config) -> "RunDir":
    """:meth:`resume` if ``resume``, else :meth:`create`."""
    return cls.resume(path, config, merge) if resume else cls.create(path, config)

  def __repr__(self):
    return f"RunDir({str(self.path)!r})"

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # -- logs ------------------------------------------------------------------

  def expect_metrics(self, columns) -> None:
    """Columns that only some metrics rows carry (e.g. a periodic validation); they
    join the header of a new metrics.csv, so no later row lacks them."""
    self._metrics.expect(columns)

  def log_metrics(self, row: dict) -> None:
    """Appends a row to metrics.csv (flushed; a new column widens the header)."""
    self._metrics.write(row)

  def log_eval(self, row: dict) -> None:
    """Appends a row to eval.csv (flushed; a new column widens the header)."""
    self._eval.write(row)

  def truncate_after(self, step: int | None) -> None:
    """Drops rows with step > `step` from metrics.csv and eval.csv.

    Call it after restoring a checkpoint on resume so the CSVs hold exactly
    what an uninterrupted run would hold. step=None (no checkpoint was
    restored) drops every row.
    """
    dropped = self._metrics.truncate_after(step) + self._eval.truncate_after(step)
    if dropped:
      logging.info("%s: dropped %d logged rows after step %s", self.path, dropped, step)

  def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
    """Writes TensorBoard scalars `prefix/name` to path/tb."""
    self._scalars.write(step, values, prefix)

  # -- files ---------------------------------------------------------------

  def write_results(self, results: dict) -> None:
    """Writes results.json (indent 2, sorted keys; replaced atomically)."""
    layout.write_json(self.path / layout.RESULTS_FILE, results)

  def write_task(self, description: dict) -> None:
    """Writes task.json: a task's ``describe()`` (its specs, baselines and parameters).

    Raises:
      RunDirError: the run already records other input or output specs (resumed with
        another task or data).
    """
    path = self.path / layout.TASK_FILE
    new = layout.normalise(description)
    stored = layout.read_json(path)
    if stored is not None:
      for key in ("inputs", "outputs"):
        if stored.get(key) != new.get(key):
          raise layout.RunDirError(
              f"the run in {self.path} records {key} {stored.get(key)} and this task has "
              f"{new.get(key)}: resume it with the same task and data, or choose another "
              "--run_dir")
    layout.write_json(path, new)

  def write_vocabulary(self, vocabulary) -> None:
    """Writes vocab.json: ``vocabulary.to_json()`` (an :class:`ok_tf.data.vocabulary.Vocabulary`).

    Raises:
      RunDirError: the run already records a different vocabulary (resumed on another text).
    """
    path = self.path / layout.VOCAB_FILE
    new = layout.normalise(vocabulary.to_json())
    stored = layout.read_json(path)
    if stored is not None and stored != new:
      raise layout.RunDirError(
          f"the run in {self.path} was trained on {len(stored.get('symbols', []))} symbols "
          f"and this text has a different set of {len(new['symbols'])}: resume it with "
          "the same training text, or choose another --run_dir")
    layout.write_json(path, new)

  # -- checkpoints (:class:`ok_tf.rundir.checkpoints.Checkpoints`) ----------

  def checkpoint(self, **trackables) -> None:
    """Registers what is checkpointed (``Checkpoints.track``), e.g.
    ``run.checkpoint(model=model, optimizer=opt, rng=generator, h=state)``."""
    self.checkpoints.track(**trackables)

  def save(self, step: int) -> str:
    """Saves path/checkpoints/ckpt-<step> (2 kept); returns its prefix."""
    return self.checkpoints.save(step)

  def save_best(self, step: int) -> str:
    """Saves path/best/ckpt-<step> (1 kept); returns its prefix."""
    return self.checkpoints.save_best(step)

  def restore_latest(self, allow_missing: Iterable[str] = ()) -> int | None:
    """See :meth:`ok_tf.rundir.checkpoints.Checkpoints.restore_latest`."""
    return self.checkpoints.restore_latest(allow_missing)

  def restore_best(self, allow_missing: Iterable[str] = ()) -> int | None:
    """See :meth:`ok_tf.rundir.checkpoints.Checkpoints.restore_best`."""
    return self.checkpoints.restore_best(allow_missing)

  def restore_readable(self, allow_missing: Iterable[str] = ()) -> int | None:
    """See :meth:`ok_tf.rundir.checkpoints.Checkpoints.restore_readable`."""
    return self.checkpoints.restore_readable(allow_missing)

  @property
  def not_restored(self) -> tuple:
    """Names the last restore left at their values (``allow_missing``)."""
    return self.checkpoints.not_restored

  @property
  def latest_step(self) -> int | None:
    return self.checkpoints.latest_step

  @property
  def best_step(self) -> int | None:
    return self.checkpoints.best_step

  def close(self) -> None:
    """Closes the CSV files and flushes / closes the TensorBoard writer."""
    self._metrics.close()
    self._eval.close()
    self._scalars.close()
