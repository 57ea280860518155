"""Bits per character on a whole text with a forward-only compiled loop.

The text ids[0..N−1] gives N−1 predictions (input ids[i], target ids[i+1]).  They are
cut into S contiguous streams of ⌈(N−1)/S⌉ steps (the tail padded and masked, so
when S is close to N−1 the last streams may be all padding); each
stream carries its state from its first character to its last, with no resets, and

    BPC = log2(e) · (1/(N−1)) Σ_i CE(logits_i, ids[i+1]).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ok_tf import models


def contiguous_streams(ids: np.ndarray, num_streams: int):
  """(inputs, targets, mask), each ``[S, L]``: S contiguous pieces of the text."""
  ids = np.asarray(ids, dtype=np.int32)
  count = len(ids) - 1
  if count < 1:
    raise ValueError("the evaluation text needs at least two symbols")
  streams = max(1, min(int(num_streams), count))
  length = -(-count // streams)
  pad = streams * length - count
  inputs = np.concatenate([ids[:-1], np.zeros(pad, np.int32)]).reshape(streams, length)
  targets = np.concatenate([ids[1:], np.zeros(pad, np.int32)]).reshape(streams, length)
  mask = np.concatenate([np.ones(count, np.float32), np.zeros(pad, np.float32)])
  return inputs, targets, mask.reshape(streams, length)


class Evaluator:
  """Evaluates a :class:`ok_tf.models.RecurrentModel` on one text.

  Args:
    model: the model (its current weights are used at every call).
    ids: the text as symbol ids.
    num_streams: S, the number of contiguous streams.
  """

  def __init__(self, model: models.RecurrentModel, ids: np.ndarray, num_streams: int = 8):
    self.model = model
    inputs, targets, mask = contiguous_streams(ids, num_streams)
    self.num_predictions = int(mask.sum())
    self._inputs = tf.constant(inputs.T)      # time-major [L, S]
    self._targets = tf.constant(targets.T)
    self._mask = tf.constant(mask.T)
    self._compiled = tf.function(self._total_nats)

  def _total_nats(self):
    cell = self.model.cell
    state = cell.zero_state(tf.shape(self._inputs)[1])
    total = tf.zeros([], tf.float64)
    for t in tf.range(tf.shape(self._inputs)[0]):
      state = cell.step(self.model.one_hot(self._inputs[t]), state)
      losses = models.cross_entropy(self.model.logits(state), self._targets[t])
      total += tf.reduce_sum(tf.cast(losses, tf.float64) * tf.cast(self._mask[t], tf.float64))
    return total

  def bpc(self) -> float:
    """Bits per character over the whole text."""
    return float(self._compiled().numpy()) / self.num_predictions / math.log(2.0)


def evaluate_bpc(model: models.RecurrentModel, ids: np.ndarray, num_streams: int = 8) -> float:
  """BPC of ``model`` on the text ``ids`` (module docstring; one :class:`Evaluator` call)."""
  return Evaluator(model, ids, num_streams).bpc()
