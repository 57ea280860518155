"""The B streams of a run split across the replicas of a ``tf.distribute`` strategy.

With R replicas (R = 1 for the default strategy of one device) replica i owns streams
i·b … (i+1)·b − 1, b = B/R: its share of the task (:func:`shard_task`) and of every random
draw (:class:`ShardedGenerator`).  The replicas are numbered across the workers of a
cluster, worker by worker (:func:`first_replica`), and each process keeps the shards of its
own replicas (:func:`local_devices`).  Inside ``strategy.run``, :func:`all_mean` is the
mean of a value over all replicas.

Random draws.  A Philox generator's draw of N values at counter c is fixed value by value:
value j comes from the Philox block c + ⌊j/k⌋ (k values per block: 4 of 32 bits, 2 of 64),
and the draw advances the counter as ``skip(N)`` does.  So a replica computes exactly its
own rows of the whole batch's draw ``[B, …]`` from the counter the whole draw starts at, the
rows before its own skipped, and advances its generator as the whole draw would: every
replica's generator (same key, same counter) stays where the single-device run's is, and a
stream's numbers do not depend on how the streams are split.
"""

from __future__ import annotations

import tensorflow as tf


def worker_index(resolver) -> int:
  """The index of this process among the cluster's workers (a chief, if the cluster names
  one, comes first), as MultiWorkerMirroredStrategy numbers them; 0 without a cluster."""
  spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
  if not spec:
    return 0
  if resolver.task_type == "chief":
    return 0
  return int(resolver.task_id) + (1 if "chief" in spec else 0)


def local_devices(strategy: tf.distribute.Strategy) -> list:
  """This process's replicas' devices (``[None]``: the default strategy's one device,
  wherever TensorFlow places ops)."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:     # the default strategy has no device list
    return [None]


def first_replica(strategy: tf.distribute.Strategy) -> int:
  """The global index of this process's first replica (0 on one machine)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return worker_index(resolver) * len(local_devices(strategy))


def replica_index() -> int:
  """The global index of the replica being traced (inside ``strategy.run``)."""
  return int(tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group))


def all_mean(value):
  """The mean over the replicas of a per-replica value (inside ``strategy.run``; the value
  itself for one replica)."""
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def shard_task(task, index: int, count: int):
  """The task of streams ``index·b … (index+1)·b − 1``, b = B/count, of ``task``'s B:
  ``task.shard(index, count)`` (:mod:`ok_tf.tasks.base`), ``task`` itself for one replica.

  A shard's draws come from a :class:`ShardedGenerator`, and every shard observes the
  replicas' mean loss, so a copy task's shards keep one curriculum.
  """
  if count == 1:
    return task
  return task.shard(index, count)


def _add_to_counter(counter, blocks):
  """A 128-bit Philox counter (two uint64, low word first) plus ``blocks``."""
  low = counter[0] + tf.cast(blocks, tf.uint64)
  return tf.stack([low, counter[1] + tf.cast(low < counter[0], tf.uint64)])


class ShardedGenerator(tf.Module):
  """Replica ``index`` of ``count``'s share of a Philox generator's draws.

  ``uniform(shape)``, ``shape[0]`` = the replica's b streams, returns rows
  ``index·b … (index+1)·b − 1`` of what ``generator.uniform([count·b, *shape[1:]])``
  returns, computing only those rows (the module docstring says how), and advances
  ``generator`` as that draw would.  With ``count`` 1 it is ``generator.uniform``.
  """

  def __init__(self, generator: tf.random.Generator, index: int, count: int):
    super().__init__()
    if generator.algorithm != tf.random.Algorithm.PHILOX.value:
      raise ValueError("a ShardedGenerator needs a Philox generator")
    self.generator = generator
    self.index, self.count = int(index), int(count)

  def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
    if self.count == 1:
      return self.generator.uniform(shape, minval, maxval, dtype)
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64):
      raise ValueError(f"a ShardedGenerator draws floats or int32/int64, not {dtype.name}")
    if dtype.is_integer and maxval is None:
      raise ValueError("a ShardedGenerator draws integers in [minval, maxval): give maxval")
    shape = tf.cast(tf.convert_to_tensor(shape), tf.int64)
    row = tf.reduce_prod(shape[1:])
    size = shape[0] * row                                  # this replica's values
    offset = self.index * size                             # the values of the rows before
    per_block = 2 if dtype.size == 8 else 4                # values per Philox block
    skipped = offset % per_block                           # of the first block, not ours
    state = self.generator.skip(self.count * size)         # key and counter before the draw
    counter = _add_to_counter(tf.bitcast(state[:2], tf.uint64), offset // per_block)
    key = tf.bitcast(state[2:3], tf.uint64)
    flat_shape = tf.reshape(skipped + size, [1])
    if dtype.is_integer:
      flat = tf.raw_ops.StatelessRandomUniformIntV2(
          shape=flat_shape, key=key, counter=counter, alg=self.generator.algorithm,
          minval=tf.convert_to_tensor(minval, dtype), maxval=tf.convert_to_tensor(maxval, dtype))
    else:
      flat = tf.raw_ops.StatelessRandomUniformV2(
          shape=flat_shape, key=key, counter=counter, alg=self.generator.algorithm,
          dtype=dtype)
      # as tf.random.Generator.uniform scales a float draw
      maxval = 1 if maxval is None else maxval
      minval, maxval = tf.convert_to_tensor(minval, dtype), tf.convert_to_tensor(maxval, dtype)
      flat = tf.math.add(flat * (maxval - minval), minval)
    return tf.reshape(flat[skipped:], shape)
