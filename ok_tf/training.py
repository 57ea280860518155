"""Trainers: online (an estimator and one Adam update per step) and truncated BPTT.

Both run many steps inside one compiled ``tf.function`` call (a ``tf.range`` loop over
a chunk of steps), so Python is off the per-step path, and they do not retrace between
chunks (the number of steps is a tensor argument).  Data comes from a *task*, a small
object with pure TensorFlow methods (see :mod:`ok_tf.tasks.copy` and
:class:`ok_tf.data.ptb.PtbStreams`)::

    task_state = task.init(rng)
    task_state, inputs [B], targets [B], reset [B] = task.next(task_state, rng)
    task_state = task.observe(task_state, loss_bits)   # scalar batch-mean bits of this step
    task.metrics(task_state) -> {name: scalar}

``reset[b]`` zeroes stream b's recurrent state (and, online, its approximation state)
before the step.  All mutable state (weights, Adam slots, estimator and task state,
random generators, step) lives in variables returned by ``trackables()`` so that a
checkpoint restores a run exactly.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from ok_tf import estimators as estimators_lib
from ok_tf import models

LOG2E = 1.0 / math.log(2.0)


class NonFiniteLossError(FloatingPointError):
  """Raised when training produces a NaN or infinite loss."""


class StateVariables(tf.Module):
  """A nest of tensors held in non-trainable variables (checkpointable)."""

  def __init__(self, structure, name=None):
    super().__init__(name=name)
    self._structure = structure
    self.variables_list = [tf.Variable(t, trainable=False) for t in tf.nest.flatten(structure)]

  def read(self):
    return tf.nest.pack_sequence_as(self._structure, [v.read_value() for v in self.variables_list])

  def assign(self, structure):
    for v, t in zip(self.variables_list, tf.nest.flatten(structure)):
      v.assign(t)


def make_generator(seed: int, stream: int) -> tf.random.Generator:
  """An independent Philox generator per (seed, stream): distinct keys, not counters."""
  return tf.random.Generator.from_key_counter(key=2 * int(seed) + int(stream),
                                              counter=[0, 0], alg="philox")


def make_optimizer(learning_rate: float, epsilon: float = 1e-8) -> keras.optimizers.Optimizer:
  """Adam with TF1's defaults (β1 0.9, β2 0.999, ε 1e-8, as the paper used)."""
  return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=epsilon)


class _Trainer(tf.Module):
  """Shared parts: model, task, optimiser, generators, step counter, chunked running."""

  def __init__(self, model: models.RecurrentModel, task, optimizer, batch_size: int,
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False):
    super().__init__()
    self.model = model
    self.task = task
    self.optimizer = optimizer
    self.batch_size = int(batch_size)
    self.clip_norm = clip_norm
    self.data_rng = make_generator(seed, 0)
    self.method_rng = make_generator(seed, 1)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.task_state = StateVariables(task.init(self.data_rng), name="task_state")
    self.variables_ = model.recurrent_variables + model.readout_variables
    optimizer.build(self.variables_)
    self._compiled = tf.function(self._run, jit_compile=jit_compile)

  def trackables(self) -> dict:
    """Everything a checkpoint must hold to resume this run exactly."""
    return {"model": self.model, "optimizer": self.optimizer, "data_rng": self.data_rng,
            "method_rng": self.method_rng, "step": self.step, "task_state": self.task_state}

  def tracing_count(self) -> int:
    return self._compiled.experimental_get_tracing_count()

  def _apply(self, recurrent_grads, readout_grads):
    if self.clip_norm:
      recurrent_grads, _ = tf.clip_by_global_norm(recurrent_grads, self.clip_norm)
    self.optimizer.apply_gradients(zip(list(recurrent_grads) + list(readout_grads),
                                       self.variables_))

  def _loss_and_grads(self, state, targets):
    """Per-stream losses, ∂L_b/∂s_b per stream, and the exact readout gradient."""
    with tf.GradientTape() as tape:
      tape.watch(state)
      logits = self.model.logits(state)
      losses = models.cross_entropy(logits, targets)
      mean = tf.reduce_mean(losses)
    grads = tape.gradient(mean, [state] + self.model.readout_variables)
    batch = tf.cast(tf.shape(losses)[0], grads[0].dtype)
    return losses, grads[0] * batch, grads[1:]

  def run(self, num_steps: int) -> dict:
    """Train ``num_steps`` steps (characters per stream); returns numpy metrics.

    Returns a dict with ``loss_bits`` ([num_steps], the batch-mean cross-entropy of each
    step in bits) and the task's metrics after the last step.
    """
    losses, metrics = self._compiled(tf.constant(num_steps, tf.int32))
    losses = losses.numpy()
    if not np.all(np.isfinite(losses)):
      bad = int(np.argmax(~np.isfinite(losses)))
      raise NonFiniteLossError(
          f"the training loss became {losses[bad]} at step {int(self.step.numpy()) - num_steps + bad}: "
          "lower the learning rate (--lr) or clip the gradient (--clip), then restart from the "
          "last checkpoint (--resume)")
    out = {k: v.numpy() for k, v in metrics.items()}
    out["loss_bits"] = losses
    return out

  def _run(self, num_steps):
    raise NotImplementedError


class OnlineTrainer(_Trainer):
  """Online learning: an estimator of dL_t/dW and one Adam update after every step.

  Per step: task.next → reset the streams that start anew → estimator step (s_t and
  G'_t) → readout, loss and exact readout gradient → recurrent gradient
  ``est.gradient(state, ∂L_t/∂s_t)`` → clip it by global norm → Adam update of W and
  W_out together → task.observe(loss in bits).  The estimator state is carried on as if
  the weights had not changed (ALGORITHMS.md §2).

  With ``shadow_exact``, exact RTRL runs beside the estimator on the same inputs and
  weights, and the chunk's metrics gain the mean cosine and relative error
  ‖ĝ − g‖/‖g‖ between the estimated and the exact gradient of W (small nets only).
  """

  def __init__(self, model, estimator: estimators_lib.Estimator, task, optimizer,
               batch_size: int, clip_norm: float | None = None, seed: int = 0,
               shadow_exact: bool = False, jit_compile: bool = False):
    self.estimator = estimator
    super().__init__(model, task, optimizer, batch_size, clip_norm, seed, jit_compile)
    self.estimator_state = StateVariables(estimator.init(self.batch_size),
                                          name="estimator_state")
    self.shadow = estimators_lib.RTRL(model.cell) if shadow_exact else None
    if self.shadow is not None:
      self.shadow_state = StateVariables(self.shadow.init(self.batch_size), name="shadow_state")

  def trackables(self):
    extra = {"shadow_state": self.shadow_state} if self.shadow is not None else {}
    return {**super().trackables(), "estimator_state": self.estimator_state, **extra}

  def _compare(self, shadow_state, dl_dh, grads):
    """(cosine, relative error) of the estimated vs the exact gradient of W."""
    exact = self.shadow.gradient(shadow_state, dl_dh)
    dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grads, exact)])
    norm_est = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a)) for a in grads]))
    norm_exact = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(b)) for b in exact]))
    diff = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a - b)) for a, b in zip(grads, exact)]))
    tiny = tf.cast(1e-30, dot.dtype)
    return (tf.cast(dot / tf.maximum(norm_est * norm_exact, tiny), tf.float32),
            tf.cast(diff / tf.maximum(norm_exact, tiny), tf.float32))

  def _run(self, num_steps):
    est = self.estimator
    losses_ta = tf.TensorArray(tf.float32, size=num_steps)
    est_state = self.estimator_state.read()
    task_state = self.task_state.read()
    shadow = self.shadow
    shadow_state = self.shadow_state.read() if shadow is not None else ()
    cos_sum = tf.zeros([], tf.float32)
    err_sum = tf.zeros([], tf.float32)
    for i in tf.range(num_steps):
      task_state, inputs, targets, reset = self.task.next(task_state, self.data_rng)
      x = self.model.one_hot(inputs)
      est_state = est.step(est.reset(est_state, reset), x, self.method_rng)
      losses, dl_dh, readout_grads = self._loss_and_grads(est_state.h, targets)
      grads = est.gradient(est_state, dl_dh)
      if shadow is not None:
        shadow_state = shadow.step(shadow.reset(shadow_state, reset), x)
        cos, err = self._compare(shadow_state, dl_dh, grads)
        cos_sum += cos
        err_sum += err
      self._apply(grads, readout_grads)
      loss_bits = tf.cast(tf.reduce_mean(losses), tf.float32) * LOG2E
      task_state = self.task.observe(task_state, loss_bits)
      losses_ta = losses_ta.write(i, loss_bits)
    self.estimator_state.assign(est_state)
    self.task_state.assign(task_state)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    metrics = dict(self.task.metrics(task_state))
    if shadow is not None:
      self.shadow_state.assign(shadow_state)
      count = tf.cast(num_steps, tf.float32)
      metrics.update(shadow_cosine=cos_sum / count, shadow_rel_error=err_sum / count)
    return losses_ta.stack(), metrics


class TBPTTTrainer(_Trainer):
  """Truncated BPTT(T): windows of T steps, one Adam update per window.

  The stream is cut into windows of T steps; the state is carried across windows with
  the gradient stopped; the update uses the gradient of the window's summed batch-mean
  loss Σ_t L_t.  A stream that resets inside a window starts from a zero state there
  (its gradient does not flow through the reset).
  """

  def __init__(self, model, task, optimizer, batch_size: int, truncation: int,
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False):
    if int(truncation) < 1:
      raise ValueError(f"truncation must be ≥ 1, got {truncation}")
    self.truncation = int(truncation)
    super().__init__(model, task, optimizer, batch_size, clip_norm, seed, jit_compile)
    self.hidden = tf.Variable(model.cell.zero_state(self.batch_size), trainable=False,
                              name="hidden")

  def trackables(self):
    return {**super().trackables(), "hidden": self.hidden}

  def run(self, num_steps):
    if num_steps % self.truncation:
      raise ValueError(f"TBPTT runs whole windows: {num_steps} steps is not a multiple of "
                       f"the truncation {self.truncation}")
    return super().run(num_steps)

  def window_loss(self, state, task_state):
    """Forward over one window: (Σ_t batch-mean loss, final state, task state, bits [T])."""
    cell = self.model.cell
    bits = tf.TensorArray(tf.float32, size=self.truncation)
    total = tf.zeros([], cell.compute_dtype)
    for t in tf.range(self.truncation):
      task_state, inputs, targets, reset = self.task.next(task_state, self.data_rng)
      state = tf.where(reset[:, None], tf.zeros_like(state), state)
      state = cell(self.model.one_hot(inputs), state)
      loss = tf.reduce_mean(models.cross_entropy(self.model.logits(state), targets))
      total += loss
      loss_bits = tf.cast(tf.stop_gradient(loss), tf.float32) * LOG2E
      task_state = self.task.observe(task_state, loss_bits)
      bits = bits.write(t, loss_bits)
    return total, state, task_state, bits.stack()

  def _run(self, num_steps):
    windows = num_steps // self.truncation
    losses_ta = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
    state = self.hidden.read_value()
    task_state = self.task_state.read()
    recurrent = self.model.recurrent_variables
    for w in tf.range(windows):
      with tf.GradientTape() as tape:
        total, state, task_state, bits = self.window_loss(tf.stop_gradient(state), task_state)
      grads = tape.gradient(total, recurrent + self.model.readout_variables)
      self._apply(grads[:len(recurrent)], grads[len(recurrent):])
      losses_ta = losses_ta.write(w, bits)
    self.hidden.assign(state)
    self.task_state.assign(task_state)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return tf.reshape(losses_ta.stack(), [-1]), self.task.metrics(task_state)
