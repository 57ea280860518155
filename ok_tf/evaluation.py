"""Evaluation, forward only: bits per character on a whole text with a compiled loop
(:class:`Evaluator`), and the weighted loss and accuracy of whole sequences of any task
(:func:`evaluate_sequences`).

The text ids[0..N−1] gives N−1 predictions (input ids[i], target ids[i+1]).  They are
cut into S contiguous streams of ⌈(N−1)/S⌉ steps (the tail padded and masked, so
when S is close to N−1 the last streams may be all padding); each
stream carries its state from its first character to its last, with no resets, and

    BPC = log2(e) · (1/(N−1)) Σ_i CE(logits_i, ids[i+1]).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ok_tf import models
from ok_tf import specs


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
    return specs.nats_to_bits(float(self._compiled().numpy()) / self.num_predictions)


def evaluate_bpc(model: models.RecurrentModel, ids: np.ndarray, num_streams: int = 8) -> float:
  """BPC of ``model`` on the text ``ids`` (module docstring; one :class:`Evaluator` call)."""
  return Evaluator(model, ids, num_streams).bpc()


def evaluate_sequences(model: models.RecurrentModel, inputs, targets, weights=None,
                       batch_size: int = 64) -> dict:
  """The weighted mean loss of ``model`` over whole sequences, forward only, and for class
  outputs the weighted accuracy:

      loss = Σ_{n,t} w_{n,t} L_{n,t} / Σ_{n,t} w_{n,t}   (bits, or the mean squared error)
      accuracy = Σ w [argmax o_{n,t} = y_{n,t}] / Σ w

  Each sequence starts from the zero state. ``inputs`` ``[N, T]`` ids or ``[N, T, d]``
  reals, ``targets`` ``[N, T]`` classes or ``[N, T, m]`` reals, ``weights`` ``[N, T]``
  (None: 1), as the model's specs say; ``batch_size`` sequences run at a time.
  """
  inputs, targets = np.asarray(inputs), np.asarray(targets)
  count = int(inputs.shape[0])
  weights = (np.ones(inputs.shape[:2], np.float64) if weights is None
             else np.asarray(weights, np.float64))
  classes = model.y_spec.kind == "classes"
  total = correct = 0.0
  for start in range(0, count, batch_size):
    stop = min(count, start + batch_size)
    outputs = model(inputs[start:stop])
    losses = model.y_spec.losses(outputs, tf.constant(targets[start:stop])).numpy()
    w = weights[start:stop]
    total += float(np.sum(w * losses))
    if classes:
      correct += float(np.sum(w * (np.argmax(outputs.numpy(), -1) == targets[start:stop])))
  mass = float(np.sum(weights))
  if mass <= 0:
    raise ValueError("every weight is 0: nothing to evaluate")
  out = {"loss": total / mass * model.y_spec.report_scale, "unit": model.y_spec.unit}
  if classes:
    out["accuracy"] = correct / mass
  return out
