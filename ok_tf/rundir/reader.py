"""A run directory read: :class:`Run` (analysis, studies, noise measurements, sampling).

The reader only reads: the model of a run is built by :func:`ok_tf.models.load_run_model`.
"""

from __future__ import annotations

import functools
import json
import pathlib

from ok_tf.rundir import checkpoints
from ok_tf.rundir import layout
from ok_tf.rundir import log


class Run:
  """A run directory as written by :class:`ok_tf.rundir.writer.RunDir`, read: ``config``,
  ``metrics`` and ``eval`` rows, ``results``, ``task()``, ``specs()``, ``vocabulary()``,
  the checkpoints' steps and prefixes.

  The files are read on first use and kept: a Run is a snapshot, make a new one to
  see rows logged since. Reading config, logs and results imports no TensorFlow.

  Args:
    path: the run directory.

  Raises:
    FileNotFoundError: `path` holds no config.json.
  """

  def __init__(self, path):
    self.path = pathlib.Path(path)
    if not layout.is_run(self.path):
      raise FileNotFoundError(
          f"{self.path} is not a run directory (it has no {layout.CONFIG_FILE})")

  def __repr__(self):
    return f"Run({str(self.path)!r})"

  @functools.cached_property
  def config(self) -> dict:
    """config.json."""
    with open(self.path / layout.CONFIG_FILE) as f:
      return json.load(f)

  @functools.cached_property
  def metrics(self) -> list[dict]:
    """The rows of metrics.csv, numbers parsed (empty cells None); [] without the file."""
    return log.read_csv(self.path / layout.METRICS_FILE)

  @functools.cached_property
  def eval(self) -> list[dict]:
    """The rows of eval.csv, numbers parsed; [] without the file."""
    return log.read_csv(self.path / layout.EVAL_FILE)

  @functools.cached_property
  def results(self) -> dict | None:
    """results.json, None while the run has not finished."""
    if not (self.path / layout.RESULTS_FILE).exists():
      return None
    with open(self.path / layout.RESULTS_FILE) as f:
      return json.load(f)

  @property
  def finished(self) -> bool:
    """Whether the run reached its last step (it wrote results.json)."""
    return (self.path / layout.RESULTS_FILE).exists()

  def vocabulary(self):
    """The symbols of a text task as an :class:`ok_tf.data.vocabulary.Vocabulary`: vocab.json,
    else (a PTB run that records none) PTB's for the config's tokenisation; None for a run
    of another task without vocab.json (the copy task)."""
    path = self.path / layout.VOCAB_FILE
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
    path = self.path / layout.TASK_FILE
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
    """The run's small files (config, CSV logs, results) that exist, in layout.LOG_FILES order."""
    return [self.path / name for name in layout.LOG_FILES if (self.path / name).exists()]

  # -- checkpoints -----------------------------------------------------------

  @property
  def checkpoints(self) -> dict[int, str]:
    """{step: prefix} of every checkpoint in checkpoints/ and best/, by step."""
    found = checkpoints.steps_in(self.path / layout.BEST_DIR)
    found.update(checkpoints.steps_in(self.path / layout.CHECKPOINT_DIR))
    return dict(sorted(found.items()))

  @property
  def latest_step(self) -> int | None:
    """Step of the latest checkpoint in checkpoints/, None if there is none."""
    return max(checkpoints.steps_in(self.path / layout.CHECKPOINT_DIR), default=None)

  @property
  def best_step(self) -> int | None:
    """Step of the best-validation checkpoint in best/, None if there is none."""
    return max(checkpoints.steps_in(self.path / layout.BEST_DIR), default=None)

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
