"""The PTB training streams (ok_tf.tasks.text on PTB): published offsets and per-stream resets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import sharding
from ok_tf import estimators
from ok_tf.tasks import text as text_task


def run_steps(streams, steps):
  """Inputs, targets and resets of ``steps`` steps from the initial state (one trace)."""
  traces = []

  @tf.function
  def step(state):
    traces.append(1)
    state, (inputs, targets, reset, _) = streams.next(state, None)
    return streams.observe(state, tf.constant(0.0)), inputs, targets, reset

  state = streams.init(None)
  rows = []
  for _ in range(steps):
    state, inputs, targets, reset = step(state)
    rows.append((inputs.numpy(), targets.numpy(), reset.numpy()))
  assert len(traces) == 1  # no retracing
  inputs, targets, resets = (np.stack(x) for x in zip(*rows))
  return state, inputs, targets, resets


def test_offsets_are_the_published_linspace():
  for n, b in [(10, 3), (5_101_618, 32), (399_782, 16), (7, 7), (100, 1)]:
    got = text_task.stream_offsets(n, b)
    np.testing.assert_array_equal(got, np.linspace(0, n - 1, b, dtype=np.int32))
    assert got.dtype == np.int32 and got[0] == 0 and got[-1] == (n - 1 if b > 1 else 0)


def test_small_text_positions_targets_and_resets_with_wraparound():
  """10 symbols, 3 streams, reset every 3: offsets 0, 4, 9; each stream resets at its own steps."""
  ids = np.arange(10, dtype=np.int32)  # symbol i at position i
  streams = text_task.TextStreams(ids, batch_size=3, reset_every=3, vocab_size=10)
  assert streams.offsets.tolist() == [0, 4, 9]
  state, inputs, targets, resets = run_steps(streams, 12)
  positions = (np.array([0, 4, 9])[None, :] + np.arange(12)[:, None]) % 10
  np.testing.assert_array_equal(inputs, positions)
  np.testing.assert_array_equal(targets, (positions + 1) % 10)  # 9 -> 0 across the end
  # Written out: stream 0 at positions 0..9,0,1; stream 1 at 4..9,0..5; stream 2 at 9,0..9,0.
  expected = np.array([
      # s0     s1     s2
      [True, True, True],     # step 0: every stream (initial state)
      [False, False, True],   # s2 wrapped to position 0
      [False, True, False],   # s1 at 6
      [True, False, False],   # s0 at 3
      [False, False, True],   # s2 at 3
      [False, True, False],   # s1 at 9
      [True, True, False],    # s0 at 6, s1 wrapped to 0
      [False, False, True],   # s2 at 6
      [False, False, False],
      [True, True, False],    # s0 at 9, s1 at 3
      [True, False, True],    # s0 wrapped to 0, s2 at 9
      [False, False, True],   # s2 wrapped to 0
  ])
  np.testing.assert_array_equal(resets, expected)
  assert not np.all(resets == resets[:, :1])  # the streams reset on different steps
  assert state.position.numpy().tolist() == [2, 6, 1]
  assert int(state.step) == 12
  assert float(streams.metrics(state)["epoch"]) == pytest.approx(12 * 3 / 10)


def test_reset_only_at_start_when_zero():
  streams = text_task.TextStreams(np.array([2, 0, 1, 1, 0], np.int32), batch_size=2,
                                reset_every=0, vocab_size=3)
  _, _, _, resets = run_steps(streams, 6)
  assert resets[0].all() and not resets[1:].any()


def test_shards_keep_their_offsets():
  """The two devices' shards (ok_tf.sharding.shard_task: slices ``streams``) play the
  whole batch's streams: same offsets, inputs, targets, resets and epoch count."""
  streams = text_task.TextStreams(np.arange(100) % 7, batch_size=4, reset_every=10, vocab_size=7)
  parts = [sharding.shard_task(streams, i, 2) for i in range(2)]
  assert [p.streams for p in parts] == [(0, 2), (2, 4)] and parts[0].batch_size == 4
  np.testing.assert_array_equal(np.concatenate([p.offsets for p in parts]), streams.offsets)
  whole = run_steps(streams, 25)
  halves = [run_steps(p, 25) for p in parts]
  for i in (1, 2, 3):  # inputs, targets, resets
    np.testing.assert_array_equal(np.concatenate([h[i] for h in halves], axis=1), whole[i])
  for part, half in zip(parts, halves):
    assert float(part.metrics(half[0])["epoch"]) == float(streams.metrics(whole[0])["epoch"])
  assert sharding.shard_task(streams, 0, 1) is streams
  with pytest.raises(ValueError, match="cannot take shard"):
    sharding.shard_task(streams, 0, 3)


def test_estimator_reset_skips_the_pass_only_when_no_stream_resets():
  """The reset pass runs on steps where some (not all) streams reset, and zeroes only those."""
  from ok_tf import cells
  cell = cells.get("rhn", 4, dtype="float64")
  cell.build(3)
  est = estimators.get("kf", cell)
  state = est.init(3)
  state = tf.nest.map_structure(lambda x: tf.ones_like(x), state)
  partial = est.reset(state, tf.constant([False, True, False]))
  for x in tf.nest.flatten(partial):
    x = x.numpy()
    assert np.all(x[1] == 0) and np.all(x[0] == 1) and np.all(x[2] == 1)
  untouched = est.reset(state, tf.constant([False, False, False]))
  for a, b in zip(tf.nest.flatten(untouched), tf.nest.flatten(state)):
    assert a is b or np.array_equal(a.numpy(), b.numpy())


def test_validation():
  with pytest.raises(ValueError, match="too short"):
    text_task.TextStreams(np.arange(3), batch_size=4)
  with pytest.raises(ValueError, match="vocab_size"):
    text_task.TextStreams(np.arange(5), batch_size=2, vocab_size=3)
  with pytest.raises(ValueError, match="reset_every"):
    text_task.TextStreams(np.arange(5), batch_size=2, reset_every=-1)
  for streams in [(1, 1), (0, 3), (-1, 1)]:
    with pytest.raises(ValueError, match="streams"):
      text_task.TextStreams(np.arange(5), batch_size=2, streams=streams)
  assert text_task.TextStreams(np.arange(5), batch_size=2).vocab_size == 5
