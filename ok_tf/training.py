"""Trainers: online (an estimator and one Adam update per step) and truncated BPTT.

Both run many steps inside one compiled ``tf.function`` call (a ``tf.range`` loop over
a chunk of steps), so Python is off the per-step path, and they do not retrace between
chunks (the number of steps is a tensor argument).  Data comes from a *task*, a small
object with pure TensorFlow methods (see :mod:`ok_tf.tasks.copy` and
:mod:`ok_tf.tasks.ptb`)::

    task_state = task.init(rng)
    task_state, inputs [B], targets [B], reset [B] = task.next(task_state, rng)
    task_state = task.observe(task_state, loss_bits)   # scalar batch-mean bits of this step
    task.metrics(task_state) -> {name: scalar}

``reset[b]`` zeroes stream b's recurrent state (and, online, its approximation state)
before the step.  All mutable state (weights, Adam slots, estimator and task state,
random generators, step) lives in variables returned by ``trackables()`` so that a
checkpoint restores a run exactly.

Several devices (``strategy=tf.distribute.MirroredStrategy(...)``): the B streams are
split into R equal shards, one per device (streams ``i·B/R … (i+1)·B/R − 1`` on device
i). Each device keeps its own shard's task state, estimator state (or TBPTT hidden
state) and random generators; the weights and Adam slots are mirrored. Per step every
device computes the mean gradient over its streams, the devices average them (so the
update uses the global batch mean, clipped by its global norm) and apply the same Adam
update. Random draws are made for the global batch on every device, each keeping its
own rows (:class:`ShardedGenerator`), so a distributed run follows the single-device
run of the same seed up to rounding.
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


class ShardedGenerator(tf.Module):
  """A generator that draws for the global batch and returns one shard's rows.

  ``uniform(shape)`` with ``shape[0]`` = the shard's batch b draws
  ``[count·b, *shape[1:]]`` from the wrapped generator and keeps rows
  ``index·b … (index+1)·b − 1``: every shard's generator holds the same key and
  counter and advances identically, so shard i sees exactly the numbers streams
  ``i·b …`` see in a single-device run.
  """

  def __init__(self, generator: tf.random.Generator, index: int, count: int):
    super().__init__()
    self.generator = generator
    self.index, self.count = int(index), int(count)

  def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
    shape = tf.convert_to_tensor(shape, tf.int32)
    static = tf.get_static_value(shape)
    if static is not None:
      b, rest = int(static[0]), [int(d) for d in static[1:]]
      draw = self.generator.uniform([self.count * b] + rest, minval, maxval, dtype)
      return draw[self.index * b:(self.index + 1) * b]
    b, rest = shape[0], shape[1:]
    draw = self.generator.uniform(tf.concat([[self.count * b], rest], 0), minval, maxval,
                                  dtype)
    return tf.reshape(draw, tf.concat([[self.count, b], rest], 0))[self.index]


class _Shard(tf.Module):
  """What one device keeps for its streams: task, task state, generators, method state."""

  def __init__(self, task, seed: int, index: int, count: int):
    super().__init__(name=f"shard_{index}")
    self.task = task
    self.data_rng = ShardedGenerator(make_generator(seed, 0), index, count)
    self.method_rng = ShardedGenerator(make_generator(seed, 1), index, count)
    self.task_state = StateVariables(task.init(self.data_rng), name="task_state")


class _ShardList(tf.Module):
  """The shards, as one checkpointable object."""

  def __init__(self, shards):
    super().__init__(name="shards")
    self.shards = list(shards)


def shard_task(task, index: int, count: int):
  """The task of streams ``index·B/count … (index+1)·B/count − 1`` (``task.shard``)."""
  if count == 1:
    return task
  if not hasattr(task, "shard"):
    raise ValueError(f"{type(task).__name__} cannot be split across devices (no shard())")
  return task.shard(index, count)


def grad_scale_factor(grad_scale: str, batch_size: int) -> float:
  """The factor applied to W's batch-mean gradient before clipping and Adam.

  ``"mean"``: 1 (the batch-mean gradient). ``"published"``: ``1 / B``, as the published
  runs, whose loss is the batch mean and whose summed per-stream products are divided
  by the batch size again, so that their clip threshold c and Adam's ε act on 1/B of
  the mean gradient g (``Adam(clip(g/B, c), ε) = Adam(clip(g, c·B), B·ε)``: Adam is
  invariant to the scale of its input up to ε). W_out's gradient is the plain mean in
  both. docs/protocol.md, "Gradient scale".
  """
  if grad_scale == "mean":
    return 1.0
  if grad_scale == "published":
    return 1.0 / int(batch_size)
  raise ValueError(f"unknown grad_scale {grad_scale!r}; choose 'mean' or 'published'")


def make_optimizer(learning_rate: float, epsilon: float = 1e-8) -> keras.optimizers.Optimizer:
  """Adam with TF1's defaults (β1 0.9, β2 0.999, ε 1e-8, as the paper used)."""
  return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=epsilon)


class _Trainer(tf.Module):
  """Shared parts: model, task, optimiser, generators, step counter, chunked running."""

  def __init__(self, model: models.RecurrentModel, task, optimizer, batch_size: int,
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False,
               strategy: tf.distribute.Strategy | None = None,
               recurrent_grad_scale: float = 1.0):
    super().__init__()
    self.recurrent_grad_scale = float(recurrent_grad_scale)
    self.model = model
    self.task = task
    self.optimizer = optimizer
    self.batch_size = int(batch_size)
    self.clip_norm = clip_norm
    self.strategy = strategy
    self.replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    self.variables_ = model.recurrent_variables + model.readout_variables
    if strategy is None:
      self.data_rng = make_generator(seed, 0)
      self.method_rng = make_generator(seed, 1)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.task_state = StateVariables(task.init(self.data_rng), name="task_state")
      optimizer.build(self.variables_)
      self._compiled = tf.function(self._run, jit_compile=jit_compile)
      return
    if self.batch_size % self.replicas:
      raise ValueError(f"the batch of {self.batch_size} streams cannot be split evenly "
                       f"across {self.replicas} devices: choose a multiple of {self.replicas}")
    if jit_compile:
      raise ValueError("jit_compile is not supported with a distribution strategy")
    self.local_batch = self.batch_size // self.replicas
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      optimizer.build(self.variables_)
    # Per-device state is created outside the strategy's scope: plain variables on
    # each device, not mirrored ones.
    self.shards = []
    for i, device in enumerate(strategy.extended.worker_devices):
      with tf.device(device):
        self.shards.append(_Shard(shard_task(task, i, self.replicas), seed, i, self.replicas))
    self._shard_list = _ShardList(self.shards)
    self._compiled = tf.function(self._run_distributed)

  def trackables(self) -> dict:
    """Everything a checkpoint must hold to resume this run exactly."""
    common = {"model": self.model, "optimizer": self.optimizer, "step": self.step}
    if self.strategy is not None:
      return {**common, "shards": self._shard_list}
    return {**common, "data_rng": self.data_rng, "method_rng": self.method_rng,
            "task_state": self.task_state}

  def _local_shard(self) -> _Shard:
    """The shard of the replica being traced (inside ``strategy.run``)."""
    ctx = tf.distribute.get_replica_context()
    index = tf.get_static_value(ctx.replica_id_in_sync_group)
    return self.shards[int(index)]

  def _run_distributed(self, num_steps):
    """The chunk loop in cross-replica context, one ``strategy.run`` per update."""
    updates = self._updates(num_steps)
    losses_ta = tf.TensorArray(tf.float32, size=updates)
    for i in tf.range(updates):
      out = self.strategy.run(self._replica_update)
      losses_ta = losses_ta.write(i, self.strategy.experimental_local_results(out)[0])
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    shard = self.shards[0]
    return tf.reshape(losses_ta.stack(), [-1]), shard.task.metrics(shard.task_state.read())

  def _updates(self, num_steps):
    return num_steps

  def _replica_update(self):
    raise NotImplementedError

  def _global_mean(self, value):
    """The mean over devices of a per-device value (identity on one device)."""
    ctx = tf.distribute.get_replica_context()
    if self.strategy is None or ctx is None:
      return value
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value)

  def tracing_count(self) -> int:
    return self._compiled.experimental_get_tracing_count()

  def _apply(self, recurrent_grads, readout_grads):
    """Scale and clip W's gradient by global norm and apply one Adam step to W and W_out.

    W's gradient is first multiplied by ``recurrent_grad_scale`` (1, or 1/B for the
    published gradient scale, :func:`grad_scale_factor`).

    Under a strategy (replica context) the gradients are first averaged over the
    devices, so clipping sees the global batch mean; Keras then sums what each device
    hands it, hence the division by the number of devices.
    """
    recurrent_grads, readout_grads = list(recurrent_grads), list(readout_grads)
    distributed = self.strategy is not None
    if distributed:
      both = self._global_mean(recurrent_grads + readout_grads)
      recurrent_grads, readout_grads = both[:len(recurrent_grads)], both[len(recurrent_grads):]
    if self.recurrent_grad_scale != 1.0:
      recurrent_grads = [g * tf.cast(self.recurrent_grad_scale, g.dtype) for g in recurrent_grads]
    if self.clip_norm:
      recurrent_grads, _ = tf.clip_by_global_norm(recurrent_grads, self.clip_norm)
    grads = recurrent_grads + readout_grads
    if distributed:
      grads = [g / self.replicas for g in grads]
    self.optimizer.apply_gradients(zip(grads, self.variables_))

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


class _OnlineStep(NamedTuple):
  """What one online step computes before the update (see OnlineTrainer._estimate)."""
  task_state: object
  x: tf.Tensor              # one-hot inputs [B, V]
  reset: tf.Tensor          # [B] bool
  est_state: object
  losses: tf.Tensor         # per-stream cross-entropy [B]
  dl_ds: tf.Tensor          # ∂L_b/∂s_b [B, S]
  grads: list               # estimated gradient of W
  readout_grads: list       # exact gradient of W_out and its bias


class OnlineTrainer(_Trainer):
  """Online learning: an estimator of dL_t/dW and one Adam update after every step.

  Per step: task.next → reset the streams that start anew → estimator step (s_t and
  G'_t) → readout, loss and exact readout gradient → recurrent gradient
  ``est.gradient(state, ∂L_t/∂s_t)`` → clip it by global norm → Adam update of W and
  W_out together → task.observe(loss in bits).  The estimator state is carried on as if
  the weights had not changed (docs/algorithms.md §2).

  With ``shadow_exact``, exact RTRL runs beside the estimator on the same inputs and
  weights, and the chunk's metrics gain the mean cosine and relative error
  ‖ĝ − g‖/‖g‖ between the estimated and the exact gradient of W (small nets only).
  """

  def __init__(self, model, estimator: estimators_lib.Estimator, task, optimizer,
               batch_size: int, clip_norm: float | None = None, seed: int = 0,
               shadow_exact: bool = False, jit_compile: bool = False,
               strategy: tf.distribute.Strategy | None = None,
               recurrent_grad_scale: float = 1.0):
    self.estimator = estimator
    if shadow_exact and strategy is not None:
      raise ValueError("shadow_exact runs on one device only (drop the strategy)")
    super().__init__(model, task, optimizer, batch_size, clip_norm, seed, jit_compile,
                     strategy, recurrent_grad_scale)
    self.shadow = estimators_lib.RTRL(model.cell) if shadow_exact else None
    if strategy is not None:
      for shard, device in zip(self.shards, strategy.extended.worker_devices):
        with tf.device(device):
          shard.estimator_state = StateVariables(estimator.init(self.local_batch),
                                                 name="estimator_state")
      return
    self.estimator_state = StateVariables(estimator.init(self.batch_size),
                                          name="estimator_state")
    if self.shadow is not None:
      self.shadow_state = StateVariables(self.shadow.init(self.batch_size), name="shadow_state")

  def trackables(self):
    if self.strategy is not None:
      return super().trackables()  # the shards hold the estimator states
    extra = {"shadow_state": self.shadow_state} if self.shadow is not None else {}
    return {**super().trackables(), "estimator_state": self.estimator_state, **extra}

  def _replica_update(self):
    """One online step of this device's streams (inside ``strategy.run``)."""
    shard = self._local_shard()
    st = self._estimate(shard.task, shard.task_state.read(), shard.estimator_state.read(),
                        shard.data_rng, shard.method_rng)
    self._apply(st.grads, st.readout_grads)
    loss_bits = self._global_mean(tf.cast(tf.reduce_mean(st.losses), tf.float32) * LOG2E)
    shard.task_state.assign(shard.task.observe(st.task_state, loss_bits))
    shard.estimator_state.assign(st.est_state)
    return loss_bits

  def _estimate(self, task, task_state, est_state, data_rng, method_rng) -> "_OnlineStep":
    """Data, estimator step, loss and both gradients of one step (no update yet)."""
    est = self.estimator
    task_state, inputs, targets, reset = task.next(task_state, data_rng)
    x = self.model.one_hot(inputs)
    est_state = est.step(est.reset(est_state, reset), x, method_rng)
    losses, dl_ds, readout_grads = self._loss_and_grads(est_state.h, targets)
    return _OnlineStep(task_state, x, reset, est_state, losses, dl_ds,
                       est.gradient(est_state, dl_ds), readout_grads)

  def _compare(self, shadow_state, dl_ds, grads):
    """(cosine, relative error) of the estimated vs the exact gradient of W."""
    exact = self.shadow.gradient(shadow_state, dl_ds)
    dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grads, exact)])
    norm_est = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a)) for a in grads]))
    norm_exact = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(b)) for b in exact]))
    diff = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(a - b)) for a, b in zip(grads, exact)]))
    tiny = tf.cast(1e-30, dot.dtype)
    return (tf.cast(dot / tf.maximum(norm_est * norm_exact, tiny), tf.float32),
            tf.cast(diff / tf.maximum(norm_exact, tiny), tf.float32))

  def _run(self, num_steps):
    losses_ta = tf.TensorArray(tf.float32, size=num_steps)
    est_state = self.estimator_state.read()
    task_state = self.task_state.read()
    shadow = self.shadow
    shadow_state = self.shadow_state.read() if shadow is not None else ()
    cos_sum = tf.zeros([], tf.float32)
    err_sum = tf.zeros([], tf.float32)
    for i in tf.range(num_steps):
      st = self._estimate(self.task, task_state, est_state, self.data_rng, self.method_rng)
      est_state = st.est_state
      if shadow is not None:
        shadow_state = shadow.step(shadow.reset(shadow_state, st.reset), st.x)
        cos, err = self._compare(shadow_state, st.dl_ds, st.grads)
        cos_sum += cos
        err_sum += err
      self._apply(st.grads, st.readout_grads)
      loss_bits = tf.cast(tf.reduce_mean(st.losses), tf.float32) * LOG2E
      task_state = self.task.observe(st.task_state, loss_bits)
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
               clip_norm: float | None = None, seed: int = 0, jit_compile: bool = False,
               strategy: tf.distribute.Strategy | None = None,
               recurrent_grad_scale: float = 1.0):
    if int(truncation) < 1:
      raise ValueError(f"truncation must be ≥ 1, got {truncation}")
    self.truncation = int(truncation)
    super().__init__(model, task, optimizer, batch_size, clip_norm, seed, jit_compile,
                     strategy, recurrent_grad_scale)
    if strategy is not None:
      b, t = self.local_batch, self.truncation
      for shard, device in zip(self.shards, strategy.extended.worker_devices):
        with tf.device(device):
          shard.hidden = tf.Variable(model.cell.zero_state(b), trainable=False,
                                     name="hidden")
          shard.running = tf.Variable(model.cell.zero_state(b), trainable=False,
                                      name="running")
          shard.window = StateVariables(
              (tf.zeros([t, b], tf.int32), tf.zeros([t, b], tf.int32),
               tf.zeros([t, b], tf.bool)), name="window")
      return
    self.hidden = tf.Variable(model.cell.zero_state(self.batch_size), trainable=False,
                              name="hidden")

  def trackables(self):
    if self.strategy is not None:
      return super().trackables()
    return {**super().trackables(), "hidden": self.hidden}

  def _run_distributed(self, num_steps):
    """Windows across devices: T forward steps, then one backward pass and update.

    The copy task's curriculum needs the loss of every step averaged over all devices
    while the window runs, and devices can only synchronise outside a loop of a
    replica's function. So each window runs forward one ``strategy.run`` per step
    (recording the window's inputs, targets and resets on each device, and observing
    the global loss), then one ``strategy.run`` recomputes the window under the tape
    from its starting state and applies the averaged gradient. The result equals the
    single-device TBPTT update; the forward pass is computed twice.
    """
    windows = num_steps // self.truncation
    losses_ta = tf.TensorArray(tf.float32, size=num_steps)
    for w in tf.range(windows):
      for t in tf.range(self.truncation):
        out = self.strategy.run(self._replica_forward, args=(t,))
        losses_ta = losses_ta.write(w * self.truncation + t,
                                    self.strategy.experimental_local_results(out)[0])
      self.strategy.run(self._replica_backward)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    shard = self.shards[0]
    return losses_ta.stack(), shard.task.metrics(shard.task_state.read())

  def _replica_forward(self, t):
    """Step t of the window on this device's streams; returns the global mean bits."""
    shard = self._local_shard()
    model = self.model
    task_state, inputs, targets, reset = shard.task.next(shard.task_state.read(),
                                                         shard.data_rng)
    state = tf.where(reset[:, None], tf.zeros_like(shard.running), shard.running)
    state = model.cell(model.one_hot(inputs), state)
    loss = tf.reduce_mean(models.cross_entropy(model.logits(state), targets))
    loss_bits = self._global_mean(tf.cast(loss, tf.float32) * LOG2E)
    shard.task_state.assign(shard.task.observe(task_state, loss_bits))
    shard.running.assign(state)
    recorded = shard.window.read()
    shard.window.assign(tuple(tf.tensor_scatter_nd_update(buf, [[t]], [row])
                              for buf, row in zip(recorded, (inputs, targets, reset))))
    return loss_bits

  def _replica_backward(self):
    """Recompute this device's window under the tape and apply the averaged update."""
    shard = self._local_shard()
    model, cell = self.model, self.model.cell
    inputs, targets, reset = shard.window.read()
    recurrent = model.recurrent_variables
    with tf.GradientTape() as tape:
      state = tf.stop_gradient(shard.hidden.read_value())
      total = tf.zeros([], cell.compute_dtype)
      for t in tf.range(self.truncation):
        state = tf.where(reset[t][:, None], tf.zeros_like(state), state)
        state = cell(model.one_hot(inputs[t]), state)
        total += tf.reduce_mean(models.cross_entropy(model.logits(state), targets[t]))
    grads = tape.gradient(total, recurrent + model.readout_variables)
    self._apply(grads[:len(recurrent)], grads[len(recurrent):])
    shard.hidden.assign(state)

  def run(self, num_steps):
    if num_steps % self.truncation:
      raise ValueError(f"TBPTT runs whole windows: {num_steps} steps is not a multiple of "
                       f"the truncation {self.truncation}")
    return super().run(num_steps)

  def window_loss(self, state, task_state):
    """Forward over one window: (Σ_t batch-mean loss, final state, task state, bits [T])."""
    cell = self.model.cell
    task, rng = self.task, self.data_rng
    bits = tf.TensorArray(tf.float32, size=self.truncation)
    total = tf.zeros([], cell.compute_dtype)
    for t in tf.range(self.truncation):
      task_state, inputs, targets, reset = task.next(task_state, rng)
      state = tf.where(reset[:, None], tf.zeros_like(state), state)
      state = cell(self.model.one_hot(inputs), state)
      loss = tf.reduce_mean(models.cross_entropy(self.model.logits(state), targets))
      total += loss
      loss_bits = tf.cast(tf.stop_gradient(loss), tf.float32) * LOG2E
      task_state = task.observe(task_state, loss_bits)
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
