"""The layout of a run directory: its file names, and finding run directories.

Layout::

    RUN_DIR/
      config.json        the run's configuration (indent 2, sorted keys)
      task.json          the task's description: input and output specs, baselines,
                         parameters (``RunDir.write_task``; ``Run.task``)
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
      model.keras        the finished run's model as a Keras file
                         (:func:`ok_tf.models.export_run_model`)
      workers/worker-<w>/  --strategy=multi_worker: worker w's checkpoints (:mod:`ok_tf.multi_worker`)
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable

from ok_tf import python_values

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


def normalise(obj: dict) -> dict:
  """What ``obj`` looks like after a round trip through a JSON file."""
  return json.loads(json.dumps(python_values.to_python(dict(obj)), sort_keys=True))


def write_json(path: pathlib.Path, obj: Any) -> None:
  """Writes ``obj`` to ``path`` (indent 2, sorted keys), replacing it atomically."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(python_values.to_python(obj), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path, default=None) -> Any:
  """The contents of JSON file ``path``; ``default`` if it does not exist."""
  path = pathlib.Path(path)
  if not path.exists():
    return default
  with open(path) as f:
    return json.load(f)


def is_run(path) -> bool:
  """Whether `path` is a run directory (it holds config.json)."""
  return (pathlib.Path(path) / CONFIG_FILE).is_file()


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
