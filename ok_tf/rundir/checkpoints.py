"""A run's checkpoints: their names, saving and restoring, and the fail-safe restore.

A checkpoint is ``<folder>/ckpt-<step>`` (TensorFlow's ``CheckpointManager`` naming):
:func:`step_of` and :func:`steps_in` are the only places that read a step from a name.
:class:`Checkpoints` keeps the latest ones of a run (checkpoints/, 2 kept) and its best
one (best/, 1 kept); :func:`restore_newest_readable` restores the newest checkpoint that
can be read, setting the unreadable ones aside in ``<folder>/unreadable/``.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Iterable

from absl import logging

from ok_tf.rundir import layout

PREFIX = "ckpt"
# Errors of a checkpoint that cannot be read: tf.errors.OpError (DataLossError for a
# checksum mismatch, NotFoundError for a missing file, ...) and, for a truncated data
# file, IndexError ("Read less bytes than requested"): see restore_newest_readable.
UNREADABLE_DIR = "unreadable"


def step_of(checkpoint_path: str | None) -> int | None:
  """The step of checkpoint ``.../ckpt-<step>``; None for None or another name."""
  if not checkpoint_path:
    return None
  m = re.search(r"-(\d+)$", str(checkpoint_path))
  return int(m.group(1)) if m else None


def steps_in(folder) -> dict[int, str]:
  """{step: prefix} of the ``ckpt-<step>`` checkpoints in ``folder`` ({} if there is none)."""
  found = {}
  for index in pathlib.Path(folder).glob(f"{PREFIX}-*.index"):
    prefix = str(index)[:-len(".index")]
    step = step_of(prefix)
    if step is not None:
      found[step] = prefix
  return dict(sorted(found.items()))


def read_every_tensor(prefix: str) -> None:
  """Reads every tensor of checkpoint ``prefix``, so that a checksum mismatch or a short
  file anywhere in it raises (a restore reads only the tensors it assigns at once)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(prefix)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


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
  raise layout.RunDirError(f"no checkpoint of {run_dir} can be read ({names}: see the "
                           "warnings above): --resume cannot continue this run; start it "
                           "again under another --run_dir")


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


class Checkpoints:
  """The checkpoints of the run in ``path``: the latest in checkpoints/ (2 kept), the best
  in best/ (1 kept), of the objects given to :meth:`track`."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    self._trackables = {}
    self._ckpt = None
    self._latest = None
    self._best = None
    self.not_restored = ()  # names the last restore left at their values (allow_missing)

  def track(self, **trackables) -> None:
    """Registers what is checkpointed: any tf.train.Checkpoint-able objects.

    E.g. ``track(model=model, optimizer=opt, rng=generator, h=state)``. A Keras
    optimizer may be restored before it is built (restore on create).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not trackables:
      raise ValueError("checkpoint() needs at least one object to track")
    self._trackables = dict(trackables)
    self._ckpt = tf.train.Checkpoint(**trackables)
    self._latest = self._manager(layout.CHECKPOINT_DIR, 2)
    self._best = self._manager(layout.BEST_DIR, 1)

  def _manager(self, folder: str, keep: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.train.CheckpointManager(self._ckpt, str(self.path / folder), max_to_keep=keep)

  def _need_tracked(self):
    if self._ckpt is None:
      raise layout.RunDirError("call RunDir.checkpoint(...) before saving or restoring")

  def save(self, step: int) -> str:
    """Saves checkpoints/ckpt-<step> (2 kept); returns its prefix."""
    self._need_tracked()
    return self._latest.save(checkpoint_number=int(step))

  def save_best(self, step: int) -> str:
    """Saves best/ckpt-<step> (1 kept); returns its prefix."""
    self._need_tracked()
    return self._best.save(checkpoint_number=int(step))

  def _restore(self, prefix: str, what: str, allow_missing: Iterable[str]) -> int | None:
    """Restores checkpoint ``prefix``; objects named in ``allow_missing`` that it lacks
    keep their values (any other missing object fails the restore)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}
    missing = tuple(k for k in allow_missing if k in self._trackables and k not in saved)
    ckpt = self._ckpt
    if missing:
      ckpt = tf.train.Checkpoint(
          **{k: v for k, v in self._trackables.items() if k not in missing})
      logging.info("%s: checkpoint %s predates %s; they keep their values", self.path,
                   prefix, ", ".join(missing))
    status = ckpt.restore(prefix)
    status.assert_existing_objects_matched()
    self.not_restored = missing
    step = step_of(prefix)
    logging.info("%s: restored %s checkpoint %s (step %s)", self.path, what, prefix, step)
    return step

  def _restore_newest(self, manager, what: str, allow_missing) -> int | None:
    self._need_tracked()
    self.not_restored = ()
    if manager.latest_checkpoint is None:
      return None
    return self._restore(manager.latest_checkpoint, what, allow_missing)

  def restore_latest(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the latest checkpoint; returns its step, None if there is none.

    allow_missing: names given to :meth:`track` that a checkpoint written before they
    were checkpointed may lack: they keep their values and :attr:`not_restored` names
    them (any other missing object fails the restore).
    """
    return self._restore_newest(self._latest, "latest", allow_missing)

  def restore_best(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the best checkpoint; returns its step, None if there is none."""
    return self._restore_newest(self._best, "best", allow_missing)

  def restore_readable(self, allow_missing: Iterable[str] = ()) -> int | None:
    """Restores the newest checkpoint in checkpoints/ that can be read; returns its step,
    None if there is none (as :meth:`restore_latest`). An unreadable one (a checksum
    mismatch, a truncated or missing file) is reported in one line and moved to
    checkpoints/unreadable/ (:func:`restore_newest_readable`).

    Raises:
      RunDirError: there are checkpoints and none of them can be read.
    """
    self._need_tracked()
    self.not_restored = ()
    step = restore_newest_readable(
        self._latest, lambda prefix: self._restore(prefix, "latest", allow_missing),
        self.path)
    if step is not None:   # the folder's state file may have changed: read it again
      self._latest = self._manager(layout.CHECKPOINT_DIR, 2)
    return step

  @property
  def latest_step(self) -> int | None:
    self._need_tracked()
    return step_of(self._latest.latest_checkpoint)

  @property
  def best_step(self) -> int | None:
    self._need_tracked()
    return step_of(self._best.latest_checkpoint)
