"""What made a run: package version, git commit, TensorFlow and the devices (provenance.json).

Every start or resume of a run appends one record to the run directory's provenance.json
(a list, oldest first): the step it started from, the time, ``ok_tf.__version__``, the git
commit of the checkout the package was imported from (None when it is not a git checkout:
an installed package; ``git_dirty`` says whether tracked files differed from it), Python's,
TensorFlow's and Keras's versions, the host, the strategy, the number of workers and the
logical devices. A resume under another package version warns in one line
(:func:`check_resume`).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import socket
import subprocess
import time
from typing import Optional

from absl import logging

from ok_tf import runs

#: The file in the run directory (beside config.json, which a resume compares).
PROVENANCE_FILE = runs.PROVENANCE_FILE

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def git_commit(folder=_PACKAGE_DIR) -> tuple[Optional[str], Optional[bool]]:
  """(commit, dirty) of the git checkout whose top folder holds the package ``folder``;
  (None, None) outside one (an installed package) or without git."""
  folder = pathlib.Path(folder).resolve()

  def git(*args):
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != folder.parent:
      return None, None
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None, None
  return commit, dirty


def record(step: int = 0, strategy=None) -> dict:
  """This process's provenance (imports TensorFlow)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import ok_tf  # pylint: disable=g-import-not-at-top
  commit, dirty = git_commit()
  gpus = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    gpus.append(details.get("device_name", gpu.name))
  workers = 1
  if strategy is not None and getattr(strategy, "cluster_resolver", None) is not None:
    workers = max(1, len(strategy.cluster_resolver.cluster_spec().as_dict().get("worker", [])))
  return {
      "step": int(step),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "ok_tf_version": ok_tf.__version__,
      "git_commit": commit,
      "git_dirty": dirty,
      "python_version": platform.python_version(),
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "host": socket.gethostname(),
      "strategy": type(strategy).__name__ if strategy is not None else None,
      "workers": workers,
      "devices": [d.name for d in tf.config.list_logical_devices()],
      "gpus": gpus,
      "cpu_count": os.cpu_count(),
  }


def read(run_dir) -> list[dict]:
  """The records of a run directory, oldest first ([] if it has none)."""
  path = pathlib.Path(run_dir) / PROVENANCE_FILE
  if not path.exists():
    return []
  with open(path) as f:
    return json.load(f)


def check_resume(run_dir, new: dict) -> None:
  """Warns in one line if the run was last started under another ok_tf version."""
  old = read(run_dir)
  if old and old[-1].get("ok_tf_version") != new["ok_tf_version"]:
    logging.warning("%s was started under ok_tf %s and resumes under %s (git %s): results "
                    "may differ from an uninterrupted run", run_dir,
                    old[-1].get("ok_tf_version"), new["ok_tf_version"], new["git_commit"])


def append(run_dir, new: dict) -> None:
  """Adds ``new`` to the run directory's provenance.json (written atomically)."""
  path = pathlib.Path(run_dir) / PROVENANCE_FILE
  records = read(run_dir) + [new]
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(records, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
