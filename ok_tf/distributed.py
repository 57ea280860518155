"""Training on several devices (``tf.distribute.MirroredStrategy``) with the steps of one
device, :func:`ok_tf.training.online_step` and :func:`ok_tf.training.tbptt_window`.

The B streams are split into R equal shards, one per device: streams i·B/R … (i+1)·B/R − 1
on device i (:func:`shard_task`).  Each device keeps its own shard's task state, estimator
state (or TBPTT hidden state) and random generators; the weights and Adam slots are
mirrored.  Per update every device computes the mean gradient over its streams, the
devices average them (so the update uses the global batch mean, clipped by its global
norm) and apply the same Adam update; every task observes the loss averaged over all
devices.  Random draws are made for the global batch on every device, each keeping its own
rows (:class:`ShardedGenerator`), so a distributed run follows the single-device run of
the same seed up to rounding.  On several machines (:mod:`ok_tf.multi_worker`) the
replicas are numbered across the workers and each process keeps the shards of its own
replicas (:attr:`MirroredTrainer.first_replica` on).  Also here: the devices of a run
(:func:`configure_devices`, :func:`make_strategy`).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import tensorflow as tf
from absl import logging

from ok_tf import config as config_lib
from ok_tf import multi_worker
from ok_tf import training


def configure_devices(cfg: config_lib.TrainConfig) -> None:
  """Split the CPU into ``cfg.cpu_devices`` logical devices (before TensorFlow starts)."""
  if cfg.cpu_devices <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cfg.cpu_devices)])
  except RuntimeError as e:
    raise config_lib.ConfigError(f"--cpu_devices must be set before TensorFlow starts ({e})")


def make_strategy(cfg: config_lib.TrainConfig) -> Optional[tf.distribute.Strategy]:
  """``None`` for one device, a MultiWorkerMirroredStrategy for ``multi_worker``
  (:func:`ok_tf.multi_worker.make_strategy`), else a MirroredStrategy over ``cfg.devices``.

  Without ``--devices`` it takes all GPUs, or, with none, all logical CPUs.
  """
  if cfg.strategy == "none":
    return None
  if cfg.strategy == "multi_worker":
    return multi_worker.make_strategy(cfg)
  devices = [d.strip() for d in cfg.devices.split(",") if d.strip()]
  if not devices:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
  try:
    strategy = tf.distribute.MirroredStrategy(devices)
  except (ValueError, RuntimeError) as e:
    raise config_lib.ConfigError(f"--devices={cfg.devices!r} cannot be used: {e}")
  n = strategy.num_replicas_in_sync
  if cfg.batch_size % n:
    raise config_lib.ConfigError(
        f"--batch_size={cfg.batch_size} streams cannot be split evenly across {n} devices "
        f"({', '.join(devices)}); choose a multiple of {n}")
  logging.info("mirrored over %d devices: %s (%d streams each)", n, ", ".join(devices),
               cfg.batch_size // n)
  return strategy


def scope(strategy: Optional[tf.distribute.Strategy]):
  """``strategy.scope()`` (mirrored variables), or no context for one device."""
  return strategy.scope() if strategy is not None else contextlib.nullcontext()


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


def shard_task(task, index: int, count: int):
  """The task of streams ``index·b … (index+1)·b − 1``, b = B/count, of ``task``'s B:
  ``task.shard(index, count)`` (:mod:`ok_tf.tasks.base`), ``task`` itself for one device.

  A shard's draws come from a :class:`ShardedGenerator`, and every shard observes the
  devices' mean loss, so a copy task's shards keep one curriculum.
  """
  if count == 1:
    return task
  return task.shard(index, count)


class Shard(tf.Module):
  """What one device keeps for its streams: task, task state, generators (and the
  trainer's state of its method, added by :meth:`MirroredTrainer.add_state`)."""

  def __init__(self, task, seed: int, index: int, count: int):
    super().__init__(name=f"shard_{index}")
    self.task = task
    self.data_rng = ShardedGenerator(training.make_generator(seed, 0), index, count)
    self.method_rng = ShardedGenerator(training.make_generator(seed, 1), index, count)
    self.task_state = training.StateVariables(task.init(self.data_rng), name="task_state")


class ShardList(tf.Module):
  """The shards, as one checkpointable object."""

  def __init__(self, shards):
    super().__init__(name="shards")
    self.shards = list(shards)


def all_mean(value):
  """The mean over the devices of a per-device value (inside ``strategy.run``)."""
  return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, value)


class Replay:
  """Recorded steps ``Data([T, B] …)`` played again: the ``next`` and ``observe`` of a task
  (all that :func:`training.tbptt_window` calls) whose state is the step index."""

  def __init__(self, data: training.Data):
    self.data = data

  def next(self, t, rng):
    del rng
    return t + 1, training.Data(*(x[t] for x in self.data))

  def observe(self, t, loss):
    del loss
    return t


class MirroredTrainer(training.Trainer):
  """The shards, the averaged update and the metrics of the distributed trainers.

  The weights, Adam slots and step are mirrored (created in the strategy's scope); the
  shards, which replace a trainer's own streams, are plain variables on their devices.  A
  subclass adds its per-device state in ``add_state(shard)`` and implements ``chunk``.
  """

  def __init__(self, strategy: tf.distribute.Strategy, model, task, optimizer,
               batch_size: int, clip_norm=None, seed: int = 0,
               recurrent_grad_scale: float = 1.0):
    self.strategy = strategy
    self.replicas = strategy.num_replicas_in_sync
    if int(batch_size) % self.replicas:
      raise ValueError(f"the batch of {batch_size} streams cannot be split evenly "
                       f"across {self.replicas} devices: choose a multiple of {self.replicas}")
    self.local_batch = int(batch_size) // self.replicas
    with strategy.scope():
      super().__init__(model, optimizer, batch_size, clip_norm, recurrent_grad_scale)
    self.shards = []   # this process's replicas: global indices first_replica, first_replica + 1, …
    self.first_replica = multi_worker.first_replica(strategy)
    for i, device in enumerate(strategy.extended.worker_devices, start=self.first_replica):
      with tf.device(device):
        self.shards.append(Shard(shard_task(task, i, self.replicas), seed, i, self.replicas))
        self.add_state(self.shards[-1])
    self.shard_list = ShardList(self.shards)

  def add_state(self, shard: Shard):
    raise NotImplementedError

  def trackables(self) -> dict:
    return {"model": self.model, "optimizer": self.optimizer, "step": self.step,
            "shards": self.shard_list}

  def local_shard(self) -> Shard:
    """The shard of the replica being traced (inside ``strategy.run``)."""
    index = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
    return self.shards[int(index) - self.first_replica]

  def apply(self, recurrent_grads, readout_grads):
    """The devices' mean gradients, scaled and clipped (:func:`training.clip_gradients`),
    then one Adam step; Keras sums what each device hands it, hence the division by R."""
    recurrent_grads, readout_grads = list(recurrent_grads), list(readout_grads)
    both = all_mean(recurrent_grads + readout_grads)
    k = len(recurrent_grads)
    grads = training.clip_gradients(both[:k], both[k:], self.recurrent_grad_scale,
                                    self.clip_norm)
    self.optimizer.apply_gradients(zip([g / self.replicas for g in grads], self.variables_))

  def metrics(self):
    """The task's metrics (those of shard 0: the tasks count steps and curricula alike)."""
    shard = self.shards[0]
    return shard.task.metrics(shard.task_state.read())


class MirroredOnlineTrainer(MirroredTrainer):
  """Online learning across devices: one ``strategy.run`` of :func:`training.online_step`
  and the averaged update per step."""

  def __init__(self, model, estimator, task, optimizer, batch_size: int, *,
               strategy: tf.distribute.Strategy, clip_norm=None, seed: int = 0,
               recurrent_grad_scale: float = 1.0):
    self.estimator = estimator
    super().__init__(strategy, model, task, optimizer, batch_size, clip_norm, seed,
                     recurrent_grad_scale)

  def add_state(self, shard):
    shard.estimator_state = training.StateVariables(self.estimator.init(self.local_batch),
                                                    name="estimator_state")

  def chunk(self, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    weights = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      loss, weight = self.strategy.run(self.replica_step)
      losses = losses.write(i, self.strategy.experimental_local_results(loss)[0])
      weights = weights.write(i, self.strategy.experimental_local_results(weight)[0])
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return losses.stack(), weights.stack(), self.metrics()

  def replica_step(self):
    shard = self.local_shard()
    carry = training.OnlineCarry(shard.task_state.read(), shard.estimator_state.read())
    out = training.online_step(self.model, self.estimator, shard.task, carry, shard.data_rng,
                               shard.method_rng, mean=all_mean)
    self.apply(out.grads, out.readout.grads)
    shard.task_state.assign(out.carry.task)
    shard.estimator_state.assign(out.carry.estimator)
    return out.loss, out.weight


class MirroredTBPTTTrainer(MirroredTrainer):
  """Truncated BPTT(T) across devices: per window, T forward steps, then the window again
  under the tape (:func:`training.tbptt_window` over the recorded steps) and the update.

  The copy task's curriculum needs every step's loss averaged over the devices while the
  window runs, and devices synchronise only outside the loops of a replica's function.
  So each forward step is one ``strategy.run`` (:func:`training.forward_step`; the devices'
  mean loss observed; the step's data recorded), and one ``strategy.run`` recomputes the
  window from its starting state and applies the averaged gradient.  The update equals
  the single-device one; the forward pass is computed twice.
  """

  def __init__(self, model, task, optimizer, batch_size: int, truncation: int, *,
               strategy: tf.distribute.Strategy, clip_norm=None, seed: int = 0,
               recurrent_grad_scale: float = 1.0):
    if int(truncation) < 1:
      raise ValueError(f"truncation must be ≥ 1, got {truncation}")
    self.truncation = self.steps_per_update = int(truncation)
    super().__init__(strategy, model, task, optimizer, batch_size, clip_norm, seed,
                     recurrent_grad_scale)

  def add_state(self, shard):
    b, t = self.local_batch, self.truncation

    def buffer(spec):
      batch = spec.batch_spec(b)
      return tf.zeros([t, *batch.shape], batch.dtype)

    shard.hidden = tf.Variable(self.model.cell.zero_state(b), trainable=False, name="hidden")
    shard.running = tf.Variable(self.model.cell.zero_state(b), trainable=False, name="running")
    shard.window = training.StateVariables(training.Data(
        buffer(self.model.x_spec), buffer(self.model.y_spec), tf.zeros([t, b], tf.bool),
        tf.zeros([t, b], tf.float32)), name="window")

  def chunk(self, num_steps):
    windows = num_steps // self.truncation
    losses = tf.TensorArray(tf.float32, size=num_steps)
    weights = tf.TensorArray(tf.float32, size=num_steps)
    for w in tf.range(windows):
      for t in tf.range(self.truncation):
        loss, weight = self.strategy.run(self.replica_forward, args=(t,))
        losses = losses.write(w * self.truncation + t,
                              self.strategy.experimental_local_results(loss)[0])
        weights = weights.write(w * self.truncation + t,
                                self.strategy.experimental_local_results(weight)[0])
      self.strategy.run(self.replica_update)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return losses.stack(), weights.stack(), self.metrics()

  def replica_forward(self, t):
    """Step t of the window on this device's streams; returns the devices' mean loss
    (reported unit) and weight."""
    shard = self.local_shard()
    task_state, data = shard.task.next(shard.task_state.read(), shard.data_rng)
    if data.weight is None:
      data = data._replace(weight=tf.ones_like(data.reset, tf.float32))
    state, losses = training.forward_step(self.model, shard.running.read_value(), data)
    loss = training.report(training.weighted_mean(losses, data.weight),
                           self.model.y_spec.report_scale)
    loss, weight = all_mean(loss), all_mean(training.mean_weight(data))
    shard.task_state.assign(shard.task.observe(task_state, training.observed(loss, weight)))
    shard.running.assign(state)
    shard.window.assign(training.Data(*(tf.tensor_scatter_nd_update(buf, [[t]], [row])
                                        for buf, row in zip(shard.window.read(), data))))
    return loss, weight

  def replica_update(self):
    """The recorded window under the tape from its starting state; the averaged update."""
    shard = self.local_shard()
    with tf.GradientTape() as tape:
      window = training.tbptt_window(self.model, Replay(shard.window.read()),
                                     tf.stop_gradient(shard.hidden.read_value()),
                                     tf.constant(0, tf.int32), None, self.truncation)
    grads = tape.gradient(window.total, self.variables_)
    k = len(self.model.recurrent_variables)
    self.apply(grads[:k], grads[k:])
    shard.hidden.assign(window.state)
