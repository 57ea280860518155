"""An estimator over a whole sequence in one compiled loop (:func:`run_sequence`)."""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import tensorflow as tf

from ok_tf.estimators.base import Estimator


class SequenceResult(NamedTuple):
  """What :func:`run_sequence` returns.

  Attributes:
    state: the estimator's state after the last step.
    grads: Σ_t ĝ_t, the estimate of d(Σ_t L_t)/dW with L_t = mean_b L_{t,b}; a list
      matching ``cell.trainable_variables``.
    readout_grads: Σ_t ∂L_t/∂v for each v of ``variables`` (exact), a list.
    losses: ``[T, B]``, L_{t,b}.
  """
  state: object
  grads: list
  readout_grads: list
  losses: tf.Tensor


def run_sequence(est: Estimator, state, inputs, loss_fn, targets=None, rng=None,
                 variables=()) -> SequenceResult:
  """Runs ``est`` over a sequence in one compiled loop and sums its gradient estimates.

  For t = 1..T, with each stream's loss L_{t,b} = ``loss_fn(s_t, target_t)[b]``::

      state = est.step(state, inputs[t], rng)                 s_t = state.h
      ∂L_{t,b}/∂s_t of every stream, and ∂L_t/∂v, from one tape through loss_fn
      ĝ_t = est.gradient(state, ∂L_t/∂s)

  Args:
    est: an estimator (:func:`get`).
    state: its state before the first step (``est.init(B)``, or a previous result's).
    inputs: x_1..x_T, ``[T, B, input_dim]``.
    loss_fn: ``(s_t [B, S], target_t) -> [B]`` per-stream losses, differentiable in s_t
      (e.g. a readout of ``cell.output(s_t)`` and a cross-entropy); L_{t,b} must depend
      on stream b's state alone.
    targets: a tensor (or nest of tensors) with T leading; ``target_t`` is its slice at t
      (None: ``loss_fn`` gets None).
    rng: a ``tf.random.Generator`` (needed by the stochastic estimators).
    variables: variables of ``loss_fn`` (a readout's weights) whose exact gradients to sum.

  Returns:
    :class:`SequenceResult` (the final state, Σ_t ĝ_t, Σ_t ∂L_t/∂v, the losses [T, B]).

  The loop is one ``tf.function``: a call with the same ``est``, ``loss_fn``, ``rng``
  and shapes reuses the compiled loop (pass the same ``loss_fn`` object, not a new
  lambda per call); inside another ``tf.function`` it becomes part of that graph.  With
  exact RTRL, ``grads`` is the gradient of Σ_t L_t that BPTT over the sequence gives.
  """
  if est.stochastic and rng is None:
    raise ValueError(f"{est.name} draws random numbers: pass rng=tf.random.Generator"
                     ".from_seed(0) (or any generator)")
  # A bound method is a new object at every attribute access (and would be traced anew
  # at every call): the compiled loop is keyed on its function and its object instead.
  if inspect.ismethod(loss_fn):
    loss_fn = (loss_fn.__func__, loss_fn.__self__)
  return _sequence_loop(est, state, tf.convert_to_tensor(inputs), loss_fn, targets, rng,
                        tuple(variables))


@tf.function
def _sequence_loop(est, state, inputs, loss_fn, targets, rng, variables) -> SequenceResult:
  """:func:`run_sequence`'s compiled loop (``loss_fn`` a callable or (function, self))."""
  if isinstance(loss_fn, tuple):
    loss_fn = functools.partial(*loss_fn)
  variables = list(variables)
  grads = [tf.zeros(v.shape, est.dtype) for v in est.cell.trainable_variables]
  readout_grads = [tf.zeros(v.shape, v.dtype) for v in variables]
  losses = tf.TensorArray(est.dtype, size=tf.shape(inputs)[0])
  for t in tf.range(tf.shape(inputs)[0]):
    state = est.step(state, inputs[t], rng)
    target = None if targets is None else tf.nest.map_structure(lambda y: y[t], targets)
    with tf.GradientTape() as tape:
      tape.watch(state.h)
      loss = tf.cast(loss_fn(state.h, target), est.dtype)
      total = tf.reduce_sum(loss)
    dl_ds, *var_grads = tape.gradient(total, [state.h] + variables,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
    batch = tf.cast(tf.shape(loss)[0], est.dtype)
    grads = [g + e for g, e in zip(grads, est.gradient(state, dl_ds))]
    readout_grads = [g + tf.cast(tf.convert_to_tensor(v), g.dtype) / tf.cast(batch, g.dtype)
                     for g, v in zip(readout_grads, var_grads)]
    losses = losses.write(t, loss)
  return SequenceResult(state, grads, readout_grads, losses.stack())
