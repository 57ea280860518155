"""Validation during training: bits per character on the validation text, the best checkpoint.

:class:`Validation` is the evaluation hook of :func:`ok_tf.experiment.train` (PTB). After
the chunk of steps that ends at a multiple of ``every``, and after the last one, it
measures the validation BPC (:class:`ok_tf.evaluation.Evaluator`), logs ``step, chars,
valid_bpc`` to eval.csv and ``eval/valid_bpc`` to TensorBoard, adds ``valid_bpc`` to that
step's metrics row and, when the BPC is the lowest so far, saves ``best/ckpt-<step>``.

Its state (the best BPC and its step, the last evaluation) lives in variables that join
the trainer's checkpoint (:meth:`Validation.trackables`), so a resumed run continues
exactly where the checkpoint stood. A checkpoint written before these variables existed
lacks them; the state is then rebuilt once from the rows of eval.csv up to that checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from absl import logging

from ok_tf import evaluation
from ok_tf import runs


class Validation:
  """Validation BPC every ``every`` steps and at ``last_step``; see the module docstring.

  Args:
    ids: the validation text as symbol ids.
    every: steps between evaluations (a multiple of the trainer's chunk, ``log_every``).
    last_step: the run's last step, always evaluated.
    batch_size: B, for the ``chars`` column (steps × B).
    num_streams: S, the contiguous streams the text is cut into for evaluation.
  """

  name = "validation"      # its key in the checkpoint
  columns = ("valid_bpc",)  # metrics.csv carries it on the evaluation rows only

  def __init__(self, ids: np.ndarray, every: int, last_step: int, batch_size: int,
               num_streams: int = 8):
    self.ids = ids
    self.every = int(every)
    self.last_step = int(last_step)
    self.batch_size = int(batch_size)
    self.num_streams = int(num_streams)
    self.state = tf.Module(name=self.name)
    self.state.best_bpc = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
    self.state.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)  # -1: none yet
    self.state.last_bpc = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
    self.state.last_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
    self._evaluator = None

  def trackables(self) -> dict:
    """What joins the run's checkpoint: ``{"validation": the state variables}``."""
    return {self.name: self.state}

  @property
  def best(self) -> tuple[int | None, float]:
    """(step, BPC) of the lowest validation BPC so far; (None, inf) before the first."""
    step = int(self.state.best_step.numpy())
    return (step if step >= 0 else None), float(self.state.best_bpc.numpy())

  @property
  def last(self) -> tuple[int | None, float | None]:
    """(step, BPC) of the last evaluation; (None, None) before the first."""
    step = int(self.state.last_step.numpy())
    return (step, float(self.state.last_bpc.numpy())) if step >= 0 else (None, None)

  def start(self, step: int, trainer, run: runs.RunDir) -> None:
    """Prepares the evaluation of ``trainer.model``; called once the run is restored.

    If the restored checkpoint predates the state variables (``run.not_restored``), the
    state is rebuilt from eval.csv, which holds the rows up to that checkpoint.
    """
    self._evaluator = evaluation.Evaluator(trainer.model, self.ids, self.num_streams)
    if step and self.name in run.not_restored:
      for row in runs.Run(run.path).eval:
        self._record(row["step"], row["valid_bpc"])
      logging.info("%s: validation state rebuilt from %s (best %.4f at step %s)", run.path,
                   runs.EVAL_FILE, self.best[1], self.best[0])

  def _record(self, step: int, bpc: float) -> bool:
    """Takes an evaluation into the state; returns whether it is the best so far."""
    self.state.last_step.assign(int(step))
    self.state.last_bpc.assign(float(bpc))
    if bpc < float(self.state.best_bpc.numpy()):
      self.state.best_step.assign(int(step))
      self.state.best_bpc.assign(float(bpc))
      return True
    return False

  def __call__(self, step: int, trainer, run: runs.RunDir) -> dict:
    """After the chunk ending at ``step``: evaluate if due; returns ``{"valid_bpc"}`` or ``{}``."""
    del trainer  # the evaluator holds the model
    if step % self.every and step != self.last_step:
      return {}
    bpc = self._evaluator.bpc()
    improved = self._record(step, bpc)
    run.log_eval({"step": step, "chars": step * self.batch_size, "valid_bpc": bpc})
    run.scalars(step, {"valid_bpc": bpc}, prefix="eval")
    if improved:
      run.save_best(step)
    best_step, best = self.best
    logging.info("step %d: validation %.4f bits per character (best %.4f at step %s)",
                 step, bpc, best, best_step)
    return {"valid_bpc": bpc}
