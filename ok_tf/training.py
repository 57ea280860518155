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
:mod:`ok_tf.sharding` splits the streams across a ``tf.distribute`` strategy's replicas.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ok_tf import estimators as estimators_lib
from ok_tf import models
from ok_tf import philox
from ok_tf import sharding
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
                mean=None, estimate_fn=estimate) -> OnlineStep:
  """One online step of every stream, before the update (:meth:`Trainer.apply`).

  task.next → :func:`estimate` → the task observes the loss (:func:`observed`).  ``mean``
  (optional) maps a mean over these streams to the mean over a larger batch they belong
  to, and the task observes the latter (the replicas' mean, :func:`ok_tf.sharding.all_mean`);
  ``estimate_fn`` is :func:`estimate` or a compiled version of it.
  """
  task_state, data = task.next(carry.task, data_rng)
  est_state, readout, grads = estimate_fn(model, est, carry.estimator, data, method_rng)
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


class Shard(tf.Module):
  """What one replica keeps for its streams: its task, generators (data: stream 0,
  method: 1; :class:`ok_tf.sharding.ShardedGenerator` on a strategy's device) and
  task state; a trainer adds its method's state (:meth:`Trainer.keep`)."""

  def __init__(self, task, seed: int, index: int, count: int, device=None):
    super().__init__(name=f"shard_{index}")
    self.device = device
    self.task = sharding.shard_task(task, index, count)
    with self.placed():
      # Under the default strategy (no device) the generators themselves, so that a
      # checkpoint keeps the layout of a single-device run.
      self.data_rng, self.method_rng = (
          make_generator(seed, stream) if device is None
          else sharding.ShardedGenerator(make_generator(seed, stream), index, count)
          for stream in (0, 1))
      self.task_state = StateVariables(self.task.init(self.data_rng), name="task_state")

  def placed(self):
    """The context that puts a variable on this replica's device."""
    return tf.device(self.device) if self.device is not None else contextlib.nullcontext()


class ShardList(tf.Module):
  """The shards, as one checkpointable object."""

  def __init__(self, shards):
    super().__init__(name="shards")
    self.shards = list(shards)


class Trainer(tf.Module):
  """A compiled driver under a ``tf.distribute`` strategy (the default strategy, one
  device, unless given): :meth:`run` calls ``chunk(num_steps) -> (losses [num_steps],
  weights [num_steps], task metrics)`` (``compiled``: a ``tf.function`` traced once) and
  checks the loss; :meth:`apply` is the update. ``run`` takes whole updates of ``steps_per_update`` steps.

  The weights, Adam's slots and the step are the strategy's variables (mirrored over the
  replicas); the streams are split across the replicas (:mod:`ok_tf.sharding`), and each
  replica's :class:`Shard` (made by :meth:`split`) holds its streams' task, generators and
  state on its device.  Per update every replica computes the mean gradient over its
  streams, the replicas average them (the global batch mean, clipped by its global norm)
  and apply the same Adam update; every task observes the loss averaged over the replicas.
  """

  steps_per_update = 1

  def __init__(self, model: models.RecurrentModel, optimizer, batch_size: int,
               clip_norm: float | None = None, recurrent_grad_scale: float = 1.0,
               jit_compile: bool = False, strategy: tf.distribute.Strategy | None = None):
    super().__init__()
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = self.strategy.num_replicas_in_sync
    if int(batch_size) % self.replicas:
      raise ValueError(f"the batch of {batch_size} streams cannot be split evenly "
                       f"across {self.replicas} devices: choose a multiple of {self.replicas}")
    self.model, self.optimizer = model, optimizer
    self.batch_size = int(batch_size)
    self.local_batch = self.batch_size // self.replicas
    self.clip_norm = clip_norm
    self.recurrent_grad_scale = float(recurrent_grad_scale)
    self.variables_ = model.recurrent_variables + model.readout_variables
    with self.strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      optimizer.build(self.variables_)
    # XLA compiles a function for one device: with several replicas it compiles each
    # replica's computation between two synchronisations (:meth:`xla`) instead.
    self.jit_compile = bool(jit_compile)
    self.compiled = tf.function(self.chunk, jit_compile=self.jit_compile and self.replicas == 1)

  def xla(self, fn):
    """``fn`` compiled by XLA on its replica's device when ``jit_compile`` and the chunk
    is not compiled whole (several replicas), else ``fn``."""
    if self.jit_compile and self.replicas > 1:
      return tf.function(fn, jit_compile=True)
    return fn

  def split(self, task, seed: int) -> None:
    """This process's shards of ``task``'s streams, seeded by ``seed``: replica i
    (numbered across the workers, :func:`ok_tf.sharding.first_replica`) on its device."""
    first = sharding.first_replica(self.strategy)
    self.shards = []
    for i, device in enumerate(sharding.local_devices(self.strategy), start=first):
      self.shards.append(Shard(task, seed, i, self.replicas, device))
    self.first_replica = first
    self.shard_list = ShardList(self.shards)
    self.task = self.shards[0].task

  def keep(self, name: str, make) -> None:
    """Adds ``make()``, made on the shard's device, to every shard as ``name``."""
    for shard in self.shards:
      with shard.placed():
        setattr(shard, name, make())

  #: What a shard may hold that a checkpoint must restore (a subclass adds its state).
  shard_state = ("data_rng", "method_rng", "task_state")

  def trackables(self) -> dict:
    """Everything a checkpoint must hold to resume this run exactly: the shared
    variables, and the shards' state (the default strategy: as named attributes, the
    layout of a single-device run; any other: ``shards``)."""
    shared = {"model": self.model, "optimizer": self.optimizer, "step": self.step}
    if self.shards[0].device is not None:
      return {**shared, "shards": self.shard_list}
    shard = self.shards[0]
    return {**shared, **{name: getattr(shard, name) for name in self.shard_state
                         if hasattr(shard, name)}}

  def local_shard(self) -> Shard:
    """The shard of the replica being traced (inside ``strategy.run``)."""
    return self.shards[sharding.replica_index() - self.first_replica]

  def local(self, value):
    """This process's first replica's value of an all-reduced per-replica ``value``."""
    return self.strategy.experimental_local_results(value)[0]

  def metrics(self) -> dict:
    """The task's metrics (those of the first shard: the shards count steps and curricula
    alike)."""
    shard = self.shards[0]
    return dict(shard.task.metrics(shard.task_state.read()))

  def apply(self, recurrent_grads, readout_grads):
    """One Adam step on W and W_out with :func:`clip_gradients` of the replicas' mean
    gradients (Keras sums what each replica hands it, hence the division by R)."""
    recurrent_grads, readout_grads = list(recurrent_grads), list(readout_grads)
    if self.replicas > 1:
      both = sharding.all_mean(recurrent_grads + readout_grads)
      k = len(recurrent_grads)
      recurrent_grads, readout_grads = both[:k], both[k:]
    grads = clip_gradients(recurrent_grads, readout_grads, self.recurrent_grad_scale,
                           self.clip_norm)
    if self.replicas > 1:
      grads = [g / self.replicas for g in grads]
    self.optimizer.apply_gradients(zip(grads, self.variables_))

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
    losses, weights, metrics = self.compiled(tf.constant(num_steps, tf.int32))
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
  """Online learning: :func:`online_step` on every replica's streams and one update after
  every step (:meth:`replica_steps`: with one replica the chunk, with several each step,
  is one ``strategy.run``).

  The estimator state is carried on as if the weights had not changed
  (docs/algorithms.md §2).  A ``shadow`` (:class:`ok_tf.diagnostics.Shadow`, exact RTRL)
  follows every step, ``shadow.step(state, data, ĝ_t, mean) -> (state, cosine, relative
  error)`` of the replicas' mean gradients, and the chunk's metrics gain their means
  (``shadow_cosine``, ``shadow_rel_error``)."""

  shard_state = Trainer.shard_state + ("estimator_state", "shadow_state")

  def __init__(self, model, estimator: estimators_lib.Estimator, task, optimizer,
               batch_size: int, clip_norm: float | None = None, seed: int = 0,
               shadow=None, jit_compile: bool = False, recurrent_grad_scale: float = 1.0,
               strategy: tf.distribute.Strategy | None = None):
    super().__init__(model, optimizer, batch_size, clip_norm, recurrent_grad_scale,
                     jit_compile, strategy)
    self.estimator, self.shadow = estimator, shadow
    self.estimate = self.xla(estimate)
    self.split(task, seed)
    self.keep("estimator_state", lambda: StateVariables(
        estimator.init(self.local_batch), name="estimator_state"))
    if shadow is not None:
      self.keep("shadow_state", lambda: StateVariables(
          shadow.init(self.local_batch), name="shadow_state"))

  def chunk(self, num_steps):
    if self.replicas == 1:      # nothing to synchronise: the chunk is one block of steps
      out = self.local(self.strategy.run(self.replica_steps, args=(num_steps,)))
      losses, weights = out["losses"], out["weights"]
    else:                       # replicas synchronise between blocks: one step each
      losses = tf.TensorArray(tf.float32, size=num_steps)
      weights = tf.TensorArray(tf.float32, size=num_steps)
      out = {"cosine": tf.zeros([], tf.float32), "rel_error": tf.zeros([], tf.float32)}
      for i in tf.range(num_steps):
        step = self.local(self.strategy.run(lambda: self.replica_steps(1)))
        losses = losses.write(i, step["losses"][0])
        weights = weights.write(i, step["weights"][0])
        if self.shadow is not None:
          out = {k: out[k] + step[k] for k in ("cosine", "rel_error")}
      losses, weights = losses.stack(), weights.stack()
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    metrics = self.metrics()
    if self.shadow is not None:
      count = tf.cast(num_steps, tf.float32)
      metrics.update(shadow_cosine=out["cosine"] / count,
                     shadow_rel_error=out["rel_error"] / count)
    return losses, weights, metrics

  def replica_steps(self, steps) -> dict:
    """``steps`` online steps of this replica's streams, each with its update, in one
    block (a tensor: a compiled loop; the Python int 1 with several replicas, whose
    synchronisations cannot sit inside a loop): the replicas' mean loss and weight of
    each step (and the sums of the shadow's cosine and relative error)."""
    shard = self.local_shard()
    losses = tf.TensorArray(tf.float32, size=steps)
    weights = tf.TensorArray(tf.float32, size=steps)
    carry = OnlineCarry(shard.task_state.read(), shard.estimator_state.read())
    shadow = shard.shadow_state.read() if self.shadow is not None else ()
    cos_sum, err_sum = tf.zeros([], tf.float32), tf.zeros([], tf.float32)
    for i in (range(steps) if isinstance(steps, int) else tf.range(steps)):
      out = online_step(self.model, self.estimator, shard.task, carry, shard.data_rng,
                        shard.method_rng, mean=sharding.all_mean, estimate_fn=self.estimate)
      carry = out.carry
      if self.shadow is not None:
        shadow, cos, err = self.shadow.step(shadow, out.data, out.grads,
                                            mean=sharding.all_mean)
        cos_sum, err_sum = cos_sum + cos, err_sum + err
      self.apply(out.grads, out.readout.grads)
      losses, weights = losses.write(i, out.loss), weights.write(i, out.weight)
    shard.task_state.assign(carry.task)
    shard.estimator_state.assign(carry.estimator)
    if self.shadow is not None:
      shard.shadow_state.assign(shadow)
    return {"losses": losses.stack(), "weights": weights.stack(), "cosine": cos_sum,
            "rel_error": err_sum}


class Replay:
  """Recorded steps ``Data([T, B] …)`` played again: the ``next`` and ``observe`` of a task
  (all that :func:`tbptt_window` calls) whose state is the step index."""

  def __init__(self, data: Data):
    self.data = data

  def next(self, t, rng):
    del rng
    return t + 1, Data(*(x[t] for x in self.data))

  def observe(self, t, loss):
    del loss
    return t


class TBPTTTrainer(Trainer):
  """Truncated BPTT(T): :func:`tbptt_window` and one update per window of T steps.

  The state enters the next window with its gradient stopped; the update uses the
  gradient of the window's summed batch-mean loss Σ_t L_t.  With one replica the chunk is
  one ``strategy.run`` (:meth:`replica_windows`).  With several, the copy
  task's curriculum needs every step's loss averaged over the replicas while the window
  runs, and replicas synchronise only outside the loops of a replica's function: each
  forward step is one ``strategy.run`` (:func:`forward_step`; the replicas' mean loss
  observed; the step's data recorded), and one ``strategy.run`` recomputes the window from
  its starting state (:class:`Replay`) and applies the averaged gradient.  The update
  equals the single-device one; the forward pass is computed twice.
  """

  shard_state = Trainer.shard_state + ("hidden",)

  def __init__(self, model, task, optimizer, batch_size: int, truncation: int,
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False,
               recurrent_grad_scale: float = 1.0,
               strategy: tf.distribute.Strategy | None = None):
    if int(truncation) < 1:
      raise ValueError(f"truncation must be ≥ 1, got {truncation}")
    self.truncation = self.steps_per_update = int(truncation)
    super().__init__(model, optimizer, batch_size, clip_norm, recurrent_grad_scale,
                     jit_compile, strategy)
    self.split(task, seed)
    self.window_gradient = self.xla(self.replay_gradient)
    b, t = self.local_batch, self.truncation
    self.keep("hidden", lambda: tf.Variable(model.cell.zero_state(b), trainable=False,
                                              name="hidden"))
    if self.replicas > 1:
      def buffer(spec):
        batch = spec.batch_spec(b)
        return tf.zeros([t, *batch.shape], batch.dtype)

      self.keep("running", lambda: tf.Variable(model.cell.zero_state(b), trainable=False,
                                                 name="running"))
      self.keep("window", lambda: StateVariables(Data(
          buffer(model.x_spec), buffer(model.y_spec), tf.zeros([t, b], tf.bool),
          tf.zeros([t, b], tf.float32)), name="window"))

  def chunk(self, num_steps):
    windows = num_steps // self.truncation
    if self.replicas == 1:      # nothing to synchronise: the chunk is one block of windows
      losses, weights = self.local(self.strategy.run(self.replica_windows, args=(windows,)))
    else:
      losses = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
      weights = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
      for w in tf.range(windows):
        loss, weight = self.forward_window()
        self.strategy.run(self.replica_update)
        losses, weights = losses.write(w, loss), weights.write(w, weight)
      losses, weights = losses.stack(), weights.stack()
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return tf.reshape(losses, [-1]), tf.reshape(weights, [-1]), self.metrics()

  def replica_windows(self, windows):
    """``windows`` windows of the one replica's streams, each under the tape and with its
    update, in one compiled loop: the losses and weights ``[windows, T]``."""
    shard = self.local_shard()
    losses = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
    weights = tf.TensorArray(tf.float32, size=windows, element_shape=[self.truncation])
    state, task_state = shard.hidden.read_value(), shard.task_state.read()
    for w in tf.range(windows):
      with tf.GradientTape() as tape:
        window = tbptt_window(self.model, shard.task, tf.stop_gradient(state), task_state,
                              shard.data_rng, self.truncation)
      grads = tape.gradient(window.total, self.variables_)
      k = len(self.model.recurrent_variables)
      self.apply(grads[:k], grads[k:])
      state, task_state = window.state, window.task_state
      losses, weights = losses.write(w, window.losses), weights.write(w, window.weights)
    shard.hidden.assign(state)
    shard.task_state.assign(task_state)
    return losses.stack(), weights.stack()

  def forward_window(self):
    """The window's T forward steps, one ``strategy.run`` each: the replicas' mean
    losses and weights ``[T]`` (this process's values)."""
    losses = tf.TensorArray(tf.float32, size=self.truncation)
    weights = tf.TensorArray(tf.float32, size=self.truncation)
    for t in tf.range(self.truncation):
      loss, weight = self.strategy.run(self.replica_forward, args=(t,))
      losses, weights = losses.write(t, self.local(loss)), weights.write(t, self.local(weight))
    return losses.stack(), weights.stack()

  def replica_forward(self, t):
    """Step t of the window on this replica's streams; returns the replicas' mean loss
    (reported unit) and weight."""
    shard = self.local_shard()
    task_state, data = shard.task.next(shard.task_state.read(), shard.data_rng)
    if data.weight is None:
      data = data._replace(weight=tf.ones_like(data.reset, tf.float32))
    state, losses = forward_step(self.model, shard.running.read_value(), data)
    loss = report(weighted_mean(losses, data.weight), self.model.y_spec.report_scale)
    loss, weight = sharding.all_mean(loss), sharding.all_mean(mean_weight(data))
    shard.task_state.assign(shard.task.observe(task_state, observed(loss, weight)))
    shard.running.assign(state)
    shard.window.assign(Data(*(tf.tensor_scatter_nd_update(buf, [[t]], [row])
                               for buf, row in zip(shard.window.read(), data))))
    return loss, weight

  def replay_gradient(self, hidden, recorded: Data):
    """The gradient of the recorded window's Σ_t L_t from ``hidden`` and its final state."""
    with tf.GradientTape() as tape:
      window = tbptt_window(self.model, Replay(recorded), tf.stop_gradient(hidden),
                            tf.constant(0, tf.int32), None, self.truncation)
    return tape.gradient(window.total, self.variables_), window.state

  def replica_update(self):
    """The recorded window under the tape from its starting state; the averaged update."""
    shard = self.local_shard()
    grads, state = self.window_gradient(shard.hidden.read_value(), shard.window.read())
    k = len(self.model.recurrent_variables)
    self.apply(grads[:k], grads[k:])
    shard.hidden.assign(state)


def mean_loss(losses, weights) -> float | None:
  """The mean loss of the steps and streams that count, Σ_t L_t / Σ_t (1/B) Σ_b w_{t,b}
  (``losses`` and ``weights`` as :meth:`Trainer.run` returns them); None when no step
  had a weight. With every weight 1 this is the mean of the losses."""
  total = np.sum(weights)
  if total <= 0:
    return None
  return float(np.sum(losses) / total)
