"""Playing a task's steps in one compiled loop, for the task tests (tests/test_tasks_*.py)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ok_tf import sharding
from ok_tf.tasks import base


def play(task, steps: int, rng, state=None):
  """``steps`` calls of ``task.next`` in one tf.function (``init`` first unless ``state``
  is given): the final state and the steps' Data as numpy arrays ``[steps, B, ...]``."""
  if state is None:
    state = task.init(rng)

  @tf.function
  def loop(state):
    state, first = task.next(state, rng)
    arrays = [tf.TensorArray(v.dtype, size=steps, element_shape=v.shape).write(0, v)
              for v in first]

    def body(i, state, arrays):
      state, data = task.next(state, rng)
      return i + 1, state, [a.write(i, v) for a, v in zip(arrays, data)]

    _, state, arrays = tf.while_loop(lambda i, *_: i < steps, body,
                                     (tf.constant(1), state, arrays))
    return state, [a.stack() for a in arrays]

  state, stacked = loop(state)
  return state, base.Data(*[s.numpy() for s in stacked])


def play_sharded(task, steps: int, seed: int, count: int):
  """The Data of ``count`` shards of ``task``, each with its
  :class:`ok_tf.sharding.ShardedGenerator`, concatenated along the streams."""
  parts = []
  for index in range(count):
    rng = sharding.ShardedGenerator(tf.random.Generator.from_seed(seed), index, count)
    parts.append(play(task.shard(index, count), steps, rng)[1])
  return base.Data(*[np.concatenate(fields, axis=1) for fields in zip(*parts)])


def assert_same_as_sharded(task, steps: int, seed: int = 3, count: int = 2) -> None:
  """A run split in ``count`` shards plays exactly the single-device run's streams."""
  whole = play(task, steps, tf.random.Generator.from_seed(seed))[1]
  split = play_sharded(task, steps, seed, count)
  for a, b in zip(whole, split):
    np.testing.assert_array_equal(a, b)
