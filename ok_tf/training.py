"""Online learning and truncated BPTT: one step and one window, each written once as a
pure function, and the thin compiled drivers that run them.

A *task* (:mod:`ok_tf.tasks.copy`, :mod:`ok_tf.tasks.ptb`) has pure TensorFlow methods
``init(rng)``, ``next(state, rng) -> (state, inputs [B], targets [B], reset [B])``,
``observe(state, loss_bits)`` (the step's batch-mean loss in bits) and ``metrics(state)``;
``reset[b]`` zeroes stream b's state before the step.  One online step, :func:`online_step`::

    G'_t, s_t = est.step(est.reset(G'_{t−1}, reset), x_t)             (:func:`estimate`)
    L_b, ∂L_b/∂s_t, ∂L/∂W_out = models.readout_gradient(s_t),  L = mean_b L_b
    ĝ_t = mean_b (∂L_b/∂s_t) G'_{t,b} = est.gradient(G'_t, ∂L/∂s) ≈ dL/dW
    task.observe(L / ln 2)

then Adam on W and W_out, W's gradient scaled and clipped (:meth:`Trainer.apply`).  One
TBPTT window, :func:`tbptt_window`: T forward steps (:func:`forward_step`), the autodiff
gradient of Σ_t L_t, one update.  The drivers run a chunk of steps in one ``tf.function``
(a ``tf.range`` loop of tensor length: chunks do not retrace) and keep all mutable state in
variables (``trackables()``: a checkpoint restores a run exactly).
:mod:`ok_tf.distributed` runs the same steps on several devices.
"""

from __future__ import annotations

import math
from typing import NamedTuple

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


class Data(NamedTuple):
  """One step of a task for its B streams: ``inputs`` and ``targets`` [B] int32,
  ``reset`` [B] bool (the streams that start anew at this step)."""
  inputs: tf.Tensor
  targets: tf.Tensor
  reset: tf.Tensor


def next_data(task, task_state, rng):
  """``task.next`` as ``(task_state, Data)``."""
  task_state, inputs, targets, reset = task.next(task_state, rng)
  return task_state, Data(inputs, targets, reset)


def to_bits(loss) -> tf.Tensor:
  """A loss in nats as float32 bits, loss / ln 2, without gradient."""
  return tf.cast(tf.stop_gradient(loss), tf.float32) * LOG2E


def estimate(model, est, est_state, data: Data, rng):
  """The estimator's step on ``data``: ``(state, models.Readout, ĝ_t)`` after the step,

      G'_t, s_t = est.step(est.reset(state, reset), x_t)
      ĝ_t = mean_b (∂L_b/∂s_t) G'_{t,b} ≈ dL/dW      (est.gradient: a list matching W)
  """
  est_state = est.step(est.reset(est_state, data.reset), model.one_hot(data.inputs), rng)
  readout = models.readout_gradient(model, est_state.h, data.targets)
  return est_state, readout, est.gradient(est_state, readout.dl_ds)


class OnlineCarry(NamedTuple):
  """What one online step carries to the next: the task's state, the estimator's state."""
  task: object
  estimator: object


class OnlineStep(NamedTuple):
  """The result of :func:`online_step`."""
  carry: OnlineCarry        # after the step (the task has observed the loss)
  data: Data
  readout: models.Readout   # L_b, ∂L_b/∂s_t and the exact ∂L/∂W_out
  grads: list               # ĝ_t, the estimate of dL/dW
  loss_bits: tf.Tensor      # [] float32, mean_b L_b / ln 2, as the task observed it


def online_step(model, est, task, carry: OnlineCarry, data_rng, method_rng,
                mean=None) -> OnlineStep:
  """One online step of every stream, before the update (:meth:`Trainer.apply`).

  task.next → :func:`estimate` → the task observes the batch-mean loss in bits.  ``mean``
  (optional) maps that mean to the mean over a larger batch these streams belong to, and
  the task observes the latter (the devices' mean in :mod:`ok_tf.distributed`).
  """
  task_state, data = next_data(task, carry.task, data_rng)
  est_state, readout, grads = estimate(model, est, carry.estimator, data, method_rng)
  loss_bits = to_bits(tf.reduce_mean(readout.losses))
  if mean is not None:
    loss_bits = mean(loss_bits)
  carry = OnlineCarry(task.observe(task_state, loss_bits), est_state)
  return OnlineStep(carry, data, readout, grads, loss_bits)


def forward_step(model, state, data: Data):
  """s_t = cell(x_t, s_{t−1}) with s_{t−1} zeroed where ``reset``: ``(s_t, L_b [B])``."""
  state = tf.where(data.reset[:, None], tf.zeros_like(state), state)
  state = model.cell.step(model.one_hot(data.inputs), state)
  return state, model.step_losses(state, data.targets)


class Window(NamedTuple):
  """The result of :func:`tbptt_window`."""
  total: tf.Tensor       # Σ_t mean_b L_{t,b}, differentiable
  state: tf.Tensor       # s at the end of the window
  task_state: object
  bits: tf.Tensor        # [T] float32, each step's mean_b L_{t,b} / ln 2


def tbptt_window(model, task, state, task_state, rng, length: int) -> Window:
  """``length`` forward steps from ``state``, the task observing each step's loss.

  Differentiate ``total`` = Σ_t L_t (L_t the batch mean) under a tape for TBPTT's update;
  a stream that resets inside the window restarts from zero there (no gradient flows
  through the reset), and the caller stops the gradient of the initial state.
  """
  bits = tf.TensorArray(tf.float32, size=length)
  total = tf.zeros([], model.cell.compute_dtype)
  for t in tf.range(length):
    task_state, data = next_data(task, task_state, rng)
    state, losses = forward_step(model, state, data)
    loss = tf.reduce_mean(losses)
    total += loss
    loss_bits = to_bits(loss)
    task_state = task.observe(task_state, loss_bits)
    bits = bits.write(t, loss_bits)
  return Window(total, state, task_state, bits.stack())


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
  """A compiled driver: :meth:`run` calls ``chunk(num_steps) -> (loss_bits [num_steps],
  task metrics)`` (compiled once) and checks the loss; :meth:`apply` is the update.
  ``run`` takes whole updates of ``steps_per_update`` steps."""

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
    """Train ``num_steps`` steps (characters per stream); returns numpy metrics:
    ``loss_bits`` [num_steps] (each step's batch-mean loss in bits) and the task's."""
    if num_steps % self.steps_per_update:
      raise ValueError(f"TBPTT runs whole windows: {num_steps} steps is not a multiple of "
                       f"the truncation {self.steps_per_update}")
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
      losses = losses.write(i, out.loss_bits)
    self.task_state.assign(carry.task)
    self.estimator_state.assign(carry.estimator)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    metrics = dict(self.task.metrics(carry.task))
    if self.shadow is not None:
      self.shadow_state.assign(shadow)
      count = tf.cast(num_steps, tf.float32)
      metrics.update(shadow_cosine=cos_sum / count, shadow_rel_error=err_sum / count)
    return losses.stack(), metrics


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
    state, task_state = self.hidden.read_value(), self.task_state.read()
    for w in tf.range(windows):
      with tf.GradientTape() as tape:
        window = tbptt_window(self.model, self.task, tf.stop_gradient(state), task_state,
                              self.data_rng, self.truncation)
      grads = tape.gradient(window.total, self.variables_)
      k = len(self.model.recurrent_variables)
      self.apply(grads[:k], grads[k:])
      state, task_state = window.state, window.task_state
      losses = losses.write(w, window.bits)
    self.hidden.assign(state)
    self.task_state.assign(task_state)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return tf.reshape(losses.stack(), [-1]), self.task.metrics(task_state)
