"""Online learning and truncated BPTT: one step and one window, each written once as a
pure function, and the thin compiled drivers that run them.

A *task* (the protocol of :mod:`ok_tf.tasks.base`) has pure TensorFlow methods
``init(rng)``, ``next(state, rng) -> (state, Data(inputs, targets, reset, weight))``,
``observe(state, loss)`` (the step's loss in the task's unit) and ``metrics(state)``;
``reset[b]`` zeroes stream b's state before the step, ``weight[b]`` = w_b weighs its
loss.  One online step, :func:`online_step`::

    G'_t, s_t = est.step(est.reset(G'_{t−1}, reset), x_t)             (:func:`estimate`)
    L_b, w_b ∂L_b/∂s_t, ∂L_t/∂W_out = models.readout_gradient(s_t),  L_t = (1/B) Σ_b w_b L_b
    ĝ_t = mean_b (w_b ∂L_b/∂s_t) G'_{t,b} = est.gradient(G'_t, dl_ds) ≈ dL_t/dW
    task.observe(Σ_b w_b L_b / Σ_b w_b)           (in bits, or the mean squared error)

then Adam on W and W_out, W's gradient scaled and clipped (:meth:`Trainer.apply`).  One
TBPTT window, :func:`tbptt_window`: T forward steps (:func:`forward_step`), the autodiff
gradient of Σ_t L_t, one update.  The drivers run a chunk of steps in one ``tf.function``
(a ``tf.range`` loop of tensor length: chunks do not retrace) and keep all mutable state in
variables (``trackables()``: a checkpoint restores a run exactly).
:mod:`ok_tf.distributed` runs the same steps on several devices.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ok_tf import estimators as estimators_lib
from ok_tf import models
from ok_tf import philox
from ok_tf.tasks import base as tasks_base

class NonFiniteLossError(FloatingPointError):
  """Raised when training produces a NaN or infinite loss."""


class StateVariables(tf.Module):
  """A nest of tensors held in non-trainable variables (checkpointable)."""

  def __init__(self, structure, name=None):
    super().__init__(name=name)
    # The structure stays in a closure: as a module attribute a dict would be wrapped for
    # tracking, and a nest of that wrapper cannot be a loop variable of a compiled loop.
    self._pack = lambda flat: tf.nest.pack_sequence_as(structure, flat)
    self.variables_list = [tf.Variable(t, trainable=False) for t in tf.nest.flatten(structure)]

  def read(self):
    return self._pack([v.read_value() for v in self.variables_list])

  def assign(self, structure):
    for v, t in zip(self.variables_list, tf.nest.flatten(structure)):
      v.assign(t)


def make_generator(seed: int, stream: int) -> tf.random.Generator:
  """An independent Philox generator per (seed, stream): distinct keys, not counters."""
  return philox.generator(2 * int(seed) + int(stream))


#: The names of the gradient scales (--grad_scale) that grad_scale_factor knows.
GRAD_SCALES = ("mean", "published")


def grad_scale_factor(grad_scale: str, batch_size: int) -> float:
  """The factor s of W's batch-mean gradient g before clipping and Adam: ``"mean"`` 1;
  ``"published"`` 1/B, as the published runs, so that their clip c and Adam's ε act on
  g/B (``Adam(clip(g/B, c), ε) = Adam(clip(g, c·B), B·ε)``).  W_out's gradient is the
  plain mean in both (docs/protocol.md, "Gradient scale")."""
  if grad_scale == "mean":
    return 1.0
  if grad_scale == "published":
    return 1.0 / int(batch_size)
  raise ValueError(f"unknown grad_scale {grad_scale!r}; choose one of {', '.join(GRAD_SCALES)}")


def make_optimizer(learning_rate: float, epsilon: float = 1e-8) -> keras.optimizers.Optimizer:
  """Adam with TF1's defaults (β1 0.9, β2 0.999, ε 1e-8, as the paper used)."""
  return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=epsilon)


# ----------------------------------------------------------------------------- one step


#: One step of a task: ``inputs``, ``targets``, ``reset`` [B] bool and ``weight`` [B]
#: (:class:`ok_tf.tasks.base.Data`; ``weight`` None means 1 for every stream).
Data = tasks_base.Data


def report(loss, scale: float) -> tf.Tensor:
  """A loss as float32 in the unit it is reported in (``scale``: the output spec's
  ``report_scale``, 1/ln 2 for bits), without gradient."""
  loss = tf.cast(tf.stop_gradient(loss), tf.float32)
  return loss * scale if scale != 1.0 else loss


def weighted_mean(losses, weight) -> tf.Tensor:
  """L_t = (1/B) Σ_b w_b L_b (the plain mean when ``weight`` is None)."""
  if weight is None:
    return tf.reduce_mean(losses)
  return tf.reduce_mean(losses * tf.cast(weight, losses.dtype))


def mean_weight(data: Data) -> tf.Tensor:
  """(1/B) Σ_b w_b as float32: the share of the step's streams whose loss counts."""
  if data.weight is None:
    return tf.ones([], tf.float32)
  return tf.reduce_mean(tf.cast(data.weight, tf.float32))


def observed(loss, weight) -> tf.Tensor:
  """What the task observes: Σ_b w_b L_b / Σ_b w_b, the mean loss of the streams that
  count (0 when none does), from L_t and (1/B) Σ_b w_b."""
  return tf.math.divide_no_nan(loss, weight)


def estimate(model, est, est_state, data: Data, rng):
  """The estimator's step on ``data``: ``(state, models.Readout, ĝ_t)`` after the step,

      G'_t, s_t = est.step(est.reset(state, reset), x_t)
      ĝ_t = mean_b (w_b ∂L_b/∂s_t) G'_{t,b} ≈ dL_t/dW      (est.gradient: a list matching W)
  """
  est_state = est.step(est.reset(est_state, data.reset), model.encode(data.inputs), rng)
  readout = models.readout_gradient(model, est_state.h, data.targets, data.weight)
  return est_state, readout, est.gradient(est_state, readout.dl_ds)


class OnlineCarry(NamedTuple):
  """What one online step carries to the next: the task's state, the estimator's state."""
  task: object
  estimator: object


class OnlineStep(NamedTuple):
  """The result of :func:`online_step`."""
  carry: OnlineCarry        # after the step (the task has observed the loss)
  data: Data
  readout: models.Readout   # L_b, w_b ∂L_b/∂s_t and the exact ∂L_t/∂W_out
  grads: list               # ĝ_t, the estimate of dL_t/dW
  loss: tf.Tensor           # [] float32, L_t in the reported unit (bits, or mse)
  weight: tf.Tensor         # [] float32, (1/B) Σ_b w_b


def online_step(model, est, task, carry: OnlineCarry, data_rng, method_rng,
                mean=None) -> OnlineStep:
  """One online step of every stream, before the update (:meth:`Trainer.apply`).

  task.next → :func:`estimate` → the task observes the loss (:func:`observed`).  ``mean``
  (optional) maps a mean over these streams to the mean over a larger batch they belong
  to, and the task observes the latter (the devices' mean in :mod:`ok_tf.distributed`).
  """
  task_state, data = task.next(carry.task, data_rng)
  est_state, readout, grads = estimate(model, est, carry.estimator, data, method_rng)
  loss, weight = report(readout.loss, model.y_spec.report_scale), mean_weight(data)
  if mean is not None:
    loss, weight = mean(loss), mean(weight)
  carry = OnlineCarry(task.observe(task_state, observed(loss, weight)), est_state)
  return OnlineStep(carry, data, readout, grads, loss, weight)


def forward_step(model, state, data: Data):
  """s_t = cell(x_t, s_{t−1}) with s_{t−1} zeroed where ``reset``: ``(s_t, L_b [B])``."""
  state = tf.where(data.reset[:, None], tf.zeros_like(state), state)
  state = model.cell.step(model.encode(data.inputs), state)
  return state, model.step_losses(state, data.targets)


class Window(NamedTuple):
  """The result of :func:`tbptt_window`."""
  total: tf.Tensor       # Σ_t L_t, L_t = (1/B) Σ_b w_{t,b} L_{t,b}, differentiable
  state: tf.Tensor       # s at the end of the window
  task_state: object
  losses: tf.Tensor      # [T] float32, each step's L_t in the reported unit
  weights: tf.Tensor     # [T] float32, each step's (1/B) Σ_b w_{t,b}


def tbptt_window(model, task, state, task_state, rng, length: int) -> Window:
  """``length`` forward steps from ``state``, the task observing each step's loss.

  Differentiate ``total`` = Σ_t L_t (L_t the weighted batch mean) under a tape for
  TBPTT's update; a stream that resets inside the window restarts from zero there (no
  gradient flows through the reset), and the caller stops the gradient of the initial
  state.
  """
  reported = tf.TensorArray(tf.float32, size=length)
  weights = tf.TensorArray(tf.float32, size=length)
  total = tf.zeros([], model.cell.compute_dtype)
  for t in tf.range(length):
    task_state, data = task.next(task_state, rng)
    state, losses = forward_step(model, state, data)
    loss = weighted_mean(losses, data.weight)
    total += loss
    loss, weight = report(loss, model.y_spec.report_scale), mean_weight(data)
    task_state = task.observe(task_state, observed(loss, weight))
    reported, weights = reported.write(t, loss), weights.write(t, weight)
  return Window(total, state, task_state, reported.stack(), weights.stack())


def clip_gradients(recurrent, readout, scale: float = 1.0, clip_norm=None) -> list:
  """The gradients Adam receives: W's multiplied by ``scale`` (:func:`grad_scale_factor`)
  and clipped to global norm ``clip_norm``, then W_out's as they are."""
  recurrent, readout = list(recurrent), list(readout)
  if scale != 1.0:
    recurrent = [g * tf.cast(scale, g.dtype) for g in recurrent]
  if clip_norm:
    recurrent, _ = tf.clip_by_global_norm(recurrent, clip_norm)
  return recurrent + readout


# ----------------------------------------------------------------------------- drivers


class Trainer(tf.Module):
  """A compiled driver: :meth:`run` calls ``chunk(num_steps) -> (losses [num_steps],
  weights [num_steps], task metrics)`` (compiled once) and checks the loss; :meth:`apply`
  is the update. ``run`` takes whole updates of ``steps_per_update`` steps."""

  steps_per_update = 1

  def __init__(self, model: models.RecurrentModel, optimizer, batch_size: int,
               clip_norm: float | None = None, recurrent_grad_scale: float = 1.0,
               jit_compile: bool = False):
    super().__init__()
    self.model, self.optimizer = model, optimizer
    self.batch_size = int(batch_size)
    self.clip_norm = clip_norm
    self.recurrent_grad_scale = float(recurrent_grad_scale)
    self.variables_ = model.recurrent_variables + model.readout_variables
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    optimizer.build(self.variables_)
    self._compiled = tf.function(self.chunk, jit_compile=jit_compile)

  def _own_streams(self, task, seed: int):
    """The task, its state and the generators (data: stream 0, method: 1) on one device."""
    self.task = task
    self.data_rng, self.method_rng = make_generator(seed, 0), make_generator(seed, 1)
    self.task_state = StateVariables(task.init(self.data_rng), name="task_state")

  def trackables(self) -> dict:
    """Everything a checkpoint must hold to resume this run exactly."""
    return {"model": self.model, "optimizer": self.optimizer, "step": self.step,
            "data_rng": self.data_rng, "method_rng": self.method_rng,
            "task_state": self.task_state}

  def apply(self, recurrent_grads, readout_grads):
    """One Adam step on W and W_out with :func:`clip_gradients`."""
    grads = clip_gradients(recurrent_grads, readout_grads, self.recurrent_grad_scale,
                           self.clip_norm)
    self.optimizer.apply_gradients(zip(grads, self.variables_))

  def tracing_count(self) -> int:
    return self._compiled.experimental_get_tracing_count()

  def chunk(self, num_steps):
    raise NotImplementedError

  def run(self, num_steps: int) -> dict:
    """Train ``num_steps`` steps (time steps per stream); returns numpy metrics: under
    the output spec's ``loss_column`` (``loss_bits``, ``loss_mse``) each step's objective
    L_t = (1/B) Σ_b w_b L_b ``[num_steps]`` in its unit, under ``weight`` each step's
    (1/B) Σ_b w_b, and the task's metrics. The loss of the steps that count is
    Σ_t L_t / Σ_t weight_t (:func:`mean_loss`)."""
    if num_steps % self.steps_per_update:
      raise ValueError(f"TBPTT runs whole windows: {num_steps} steps is not a multiple of "
                       f"the truncation {self.steps_per_update}")
    losses, weights, metrics = self._compiled(tf.constant(num_steps, tf.int32))
    losses = losses.numpy()
    if not np.all(np.isfinite(losses)):
      bad = int(np.argmax(~np.isfinite(losses)))
      raise NonFiniteLossError(
          f"the training loss became {losses[bad]} at step {int(self.step.numpy()) - num_steps + bad}: "
          "lower the learning rate (--lr) or clip the gradient (--clip), then restart from the "
          "last checkpoint (--resume)")
    out = {k: v.numpy() for k, v in metrics.items()}
    out[self.model.y_spec.loss_column] = losses
    out["weight"] = weights.numpy()
    return out


class OnlineTrainer(Trainer):
  """Online learning: :func:`online_step` and one update after every step.

  The estimator state is carried on as if the weights had not changed
  (docs/algorithms.md §2).  A ``shadow`` (:class:`ok_tf.diagnostics.Shadow`, exact RTRL)
  follows every step, ``shadow.step(state, data, ĝ_t) -> (state, cosine, relative error)``,
  and the chunk's metrics gain their means (``shadow_cosine``, ``shadow_rel_error``)."""

  def __init__(self, model, estimator: estimators_lib.Estimator, task, optimizer,
               batch_size: int, clip_norm: float | None = None, seed: int = 0,
               shadow=None, jit_compile: bool = False, recurrent_grad_scale: float = 1.0):
    super().__init__(model, optimizer, batch_size, clip_norm, recurrent_grad_scale,
                     jit_compile)
    self.estimator, self.shadow = estimator, shadow
    self._own_streams(task, seed)
    self.estimator_state = StateVariables(estimator.init(self.batch_size),
                                          name="estimator_state")
    if shadow is not None:
      self.shadow_state = StateVariables(shadow.init(self.batch_size), name="shadow_state")

  def trackables(self):
    extra = {"shadow_state": self.shadow_state} if self.shadow is not None else {}
    return {**super().trackables(), "estimator_state": self.estimator_state, **extra}

  def chunk(self, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    weights = tf.TensorArray(tf.float32, size=num_steps)
    carry = OnlineCarry(self.task_state.read(), self.estimator_state.read())
    shadow = self.shadow_state.read() if self.shadow is not None else ()
    cos_sum, err_sum = tf.zeros([], tf.float32), tf.zeros([], tf.float32)
    for i in tf.range(num_steps):
      out = online_step(self.model, self.estimator, self.task, carry, self.data_rng,
                        self.method_rng)
      carry = out.carry
      if self.shadow is not None:
        shadow, cos, err = self.shadow.step(shadow, out.data, out.grads)
        cos_sum, err_sum = cos_sum + cos, err_sum + err
      self.apply(out.grads, out.readout.grads)
      losses, weights = losses.write(i, out.loss), weights.write(i, out.weight)
    self.task_state.assign(carry.task)
    self.estimator_state.assign(carry.estimator)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    metrics = dict(self.task.metrics(carry.task))
    if self.shadow is not None:
      self.shadow_state.assign(shadow)
      count = tf.cast(num_steps, tf.float32)
      metrics.update(shadow_cosine=cos_sum / count, shadow_rel_error=err_sum / count)
    return losses.stack(), weights.stack(), metrics


class TBPTTTrainer(Trainer):
  """Truncated BPTT(T): :func:`tbptt_window` and one update per window of T steps.

  The state enters the next window with its gradient stopped; the update uses the
  gradient of the window's summed batch-mean loss Σ_t L_t.
  """

  def __init__(self, model, task, optimizer, batch_size: int, truncation: int,
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False,
               recurrent_grad_scale: float = 1.0):
    if int(truncation) < 1:
      raise ValueError(f"truncation must be ≥ 1, got {truncation}")
    self.truncation = self.steps_per_update = int(truncation)
    super().__init__(model, optimizer, batch_size, clip_norm, recurrent_grad_scale,
                     jit_compile)
    self._own_streams(task, seed)
    self.hidden = tf.Variable(model.cell.zero_state(self.batch_size), trainable=False,
                              name="hidden")

  def trackables(self):
    return {**super().trackables(), "hidden": self.hidden}

  def chunk(self, num_steps):
    windows = num_steps // self.truncation
    losses = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
    weights = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
    state, task_state = self.hidden.read_value(), self.task_state.read()
    for w in tf.range(windows):
      with tf.GradientTape() as tape:
        window = tbptt_window(self.model, self.task, tf.stop_gradient(state), task_state,
                              self.data_rng, self.truncation)
      grads = tape.gradient(window.total, self.variables_)
      k = len(self.model.recurrent_variables)
      self.apply(grads[:k], grads[k:])
      state, task_state = window.state, window.task_state
      losses, weights = losses.write(w, window.losses), weights.write(w, window.weights)
    self.hidden.assign(state)
    self.task_state.assign(task_state)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return (tf.reshape(losses.stack(), [-1]), tf.reshape(weights.stack(), [-1]),
            self.task.metrics(task_state))


def mean_loss(losses, weights) -> float | None:
  """The mean loss of the steps and streams that count, Σ_t L_t / Σ_t (1/B) Σ_b w_{t,b}
  (``losses`` and ``weights`` as :meth:`Trainer.run` returns them); None when no step
  had a weight. With every weight 1 this is the mean of the losses."""
  total = np.sum(weights)
  if total <= 0:
    return None
  return float(np.sum(losses) / total)
