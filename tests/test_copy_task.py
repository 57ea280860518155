"""Tests for ok_tf.tasks.copy (the copy task with curriculum)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ok_tf.tasks.copy import BLANK, START, VOCAB_SIZE, CopyState, CopyTask, sequence


def run_steps(task, state, rng, n, losses=None):
  """Run ``n`` steps of next (+ observe with scripted losses) in one tf.function.

  Returns the final state and numpy arrays [n, B] of inputs, targets, reset,
  length, the bits [n, B, max_length] in effect at each step, and the
  level [n] after each step's observe.
  """
  if losses is None:
    losses = np.full(n, np.nan, np.float32)  # NaN: no observe
  losses = tf.constant(losses, tf.float32)

  @tf.function
  def loop(state):
    arrays = [tf.TensorArray(dt, size=n) for dt in (tf.int32, tf.int32, tf.bool, tf.int32, tf.int32, tf.int32)]

    def body(i, state, arrays):
      state, (x, y, r, _) = task.next(state, rng)
      loss = losses[i]
      observed = task.observe(state, loss)
      state = tf.nest.map_structure(
          lambda a, b: tf.where(tf.math.is_nan(loss), a, b), state, observed
      )
      vals = (x, y, r, state.length, state.bits, state.level)
      arrays = [a.write(i, v) for a, v in zip(arrays, vals)]
      return i + 1, state, arrays

    _, state, arrays = tf.while_loop(lambda i, *_: i < n, body, (0, state, arrays))
    return state, [a.stack() for a in arrays]

  state, stacked = loop(state)
  return (state, *[s.numpy() for s in stacked])


def with_level(state, level):
  return state._replace(level=tf.constant(level, tf.int32))


def test_sequence_helper():
  x, y = sequence([1, 0, 1])
  np.testing.assert_array_equal(x, [START, 1, 0, 1, BLANK, BLANK, BLANK, BLANK])
  np.testing.assert_array_equal(y, [BLANK, BLANK, BLANK, BLANK, START, 1, 0, 1])
  assert x.dtype == np.int32 and y.dtype == np.int32
  assert VOCAB_SIZE == 4 and CopyTask(batch_size=1).vocab_size == 4


def test_init_state():
  task = CopyTask(batch_size=3, max_length=8)
  s = task.init(tf.random.Generator.from_seed(0))
  assert isinstance(s, CopyState)
  assert s.bits.shape == (3, 8) and s.bits.dtype == tf.int32
  assert s.length.shape == (3,) and s.position.shape == (3,)
  assert int(s.level) == 1 and s.level.dtype == tf.int32
  assert float(s.ema) == 1.0 and s.ema.dtype == tf.float32
  np.testing.assert_array_equal(s.position.numpy(), 2 * s.length.numpy() + 2)  # all finished
  assert task.metrics(s).keys() == {"level", "ema_bits"}


@pytest.mark.parametrize("length", [1, 2, 5, 16])
def test_layout_single_stream(length):
  task = CopyTask(batch_size=1, max_length=16, length_window=1)
  rng = tf.random.Generator.from_seed(length)
  state = with_level(task.init(rng), length)
  n = 3 * (2 * length + 2)  # three consecutive sequences
  _, x, y, r, lens, bits, _ = run_steps(task, state, rng, n)
  for k in range(3):
    t0 = k * (2 * length + 2)
    seg = slice(t0, t0 + 2 * length + 2)
    assert lens[t0, 0] == length
    b = bits[t0, 0, :length]
    assert set(np.unique(b)) <= {0, 1}
    assert np.all(bits[t0, 0, length:] == 0)
    ex, ey = sequence(b)
    np.testing.assert_array_equal(x[seg, 0], ex)
    np.testing.assert_array_equal(y[seg, 0], ey)
    expected_reset = np.zeros(2 * length + 2, bool)
    expected_reset[0] = True
    np.testing.assert_array_equal(r[seg, 0], expected_reset)


def test_layout_async_streams():
  batch, steps = 6, 300
  task = CopyTask(batch_size=batch, max_length=12)
  rng = tf.random.Generator.from_seed(7)
  state = with_level(task.init(rng), 9)  # lengths in {5..9}
  _, x, y, r, lens, bits, _ = run_steps(task, state, rng, steps)
  assert r[0].all()  # every stream starts a sequence at step 0
  starts_per_stream = []
  for b in range(batch):
    starts = list(np.flatnonzero(r[:, b]))
    starts_per_stream.append(tuple(starts))
    for s0, s1 in zip(starts, starts[1:]):  # complete sequences
      length = lens[s0, b]
      assert 5 <= length <= 9
      assert s1 - s0 == 2 * length + 2  # next sequence starts right after the end
      assert np.all(lens[s0:s1, b] == length)
      ex, ey = sequence(bits[s0, b, :length])
      np.testing.assert_array_equal(x[s0:s1, b], ex)
      np.testing.assert_array_equal(y[s0:s1, b], ey)
    # the unfinished last sequence is a prefix of its layout
    s0 = starts[-1]
    ex, ey = sequence(bits[s0, b, : lens[s0, b]])
    np.testing.assert_array_equal(x[s0:, b], ex[: steps - s0])
    np.testing.assert_array_equal(y[s0:, b], ey[: steps - s0])
  # streams are asynchronous: their reset patterns differ
  assert len(set(starts_per_stream)) > 1


def published_length_probabilities(level: int, window: int = 5) -> dict[int, float]:
  """P(L = l) for L = max(1, T - U), U uniform on {0..window-1} (the published rule)."""
  probs: dict[int, float] = {}
  for u in range(window):
    length = max(1, level - u)
    probs[length] = probs.get(length, 0.0) + 1.0 / window
  return probs


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5, 6, 10])
def test_length_distribution_is_the_published_rule(level):
  """Lengths max(1, T - U), U ~ U{0..4}: each length's frequency within 4.5 standard errors.

  At T = 2 length 1 has probability 0.8 (a uniform draw on {1, 2} would give 0.5, a
  z of about 60 with these counts), so the test tells the two rules apart.
  """
  batch = 4000
  task = CopyTask(batch_size=batch, max_length=16)
  rng = tf.random.Generator.from_seed(level)
  state = with_level(task.init(rng), level)
  state, (_, _, reset, _) = task.next(state, rng)
  assert bool(tf.reduce_all(reset))
  lengths = state.length.numpy()
  probs = published_length_probabilities(level)
  assert set(np.unique(lengths)) <= set(probs)
  for length, p in probs.items():
    freq = np.mean(lengths == length)
    se = np.sqrt(p * (1 - p) / batch) if p < 1 else 1e-12
    z = (freq - p) / se if p < 1 else (freq - p) * 1e12
    assert abs(z) < 4.5, (level, length, freq, p)
  # bits are fair coin flips within the sequence and zero beyond it
  bits = state.bits.numpy()
  mask = np.arange(16)[None, :] < lengths[:, None]
  assert np.all(bits[~mask] == 0)
  assert abs(bits[mask].mean() - 0.5) < 4.5 * np.sqrt(0.25 / mask.sum())


def test_published_length_probabilities():
  assert published_length_probabilities(1) == {1: 1.0}
  assert published_length_probabilities(2) == pytest.approx({1: 0.8, 2: 0.2})
  assert published_length_probabilities(5) == pytest.approx({1: .2, 2: .2, 3: .2, 4: .2, 5: .2})


def test_curriculum_constant_zero_loss():
  decay, thr = 0.999, 0.15
  n1 = math.ceil(math.log(thr / 1.0) / math.log(decay))  # from ema 1.0
  n2 = math.ceil(math.log(thr / 0.3) / math.log(decay))  # from ema 0.3
  assert (n1, n2) == (1897, 693)
  task = CopyTask(batch_size=1)
  state = task.init(None)
  steps = n1 + 2 * n2 + 5

  @tf.function
  def loop(state):
    levels = tf.TensorArray(tf.int32, size=steps)
    emas = tf.TensorArray(tf.float32, size=steps)
    for i in tf.range(steps):
      state = task.observe(state, tf.constant(0.0))
      levels = levels.write(i, state.level)
      emas = emas.write(i, state.ema)
    return levels.stack(), emas.stack()

  levels, emas = (t.numpy() for t in loop(state))
  # levels[i] is the level after observe number i + 1
  steps_of_increase = np.flatnonzero(np.diff(np.concatenate([[1], levels]))) + 1
  np.testing.assert_array_equal(steps_of_increase, [n1, n1 + n2, n1 + 2 * n2])
  assert levels[n1 - 2] == 1 and levels[n1 - 1] == 2
  assert emas[n1 - 1] == np.float32(0.3)
  assert levels[-1] == 4


def test_curriculum_constant_high_loss_never_increments():
  task = CopyTask(batch_size=1)
  state = task.init(None)

  @tf.function
  def loop(state):
    for _ in tf.range(5000):
      state = task.observe(state, tf.constant(0.5))
    return state

  state = loop(state)
  assert int(state.level) == 1
  assert float(state.ema) == pytest.approx(0.5 + 0.5 * 0.999**5000, rel=1e-3)


def test_level_capped_at_max_length():
  task = CopyTask(batch_size=1, max_length=3, ema_decay=0.5, threshold=0.5, initial_ema=0.9)
  state = with_level(task.init(None), 3)
  state = task.observe(state, 0.0)  # ema 0.45 < 0.5: crossing
  assert int(state.level) == 3
  assert float(state.ema) == pytest.approx(0.3)


def test_new_level_only_for_sequences_drawn_after_increase():
  # decay 0.5, threshold 0.5, initial ema 0.9: observe(0) crosses at once (0.45),
  # observe(1) from 0.3 does not (0.65).
  task = CopyTask(batch_size=2, max_length=8, ema_decay=0.5, threshold=0.5,
                  initial_ema=0.9, length_window=1)
  rng = tf.random.Generator.from_seed(3)
  state = task.init(rng)
  # Stream 1 starts one step later than stream 0 (it is mid-sequence when the
  # level rises).
  state = state._replace(position=tf.constant([4, 1]), length=tf.constant([1, 1]))
  losses = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  _, x, y, r, lens, _, levels = run_steps(task, state, rng, len(losses), np.array(losses))
  np.testing.assert_array_equal(levels, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2])
  # stream 0: sequence of length 1 at steps 0..3 (drawn at level 1), the next one
  # drawn at step 4 after the increase at step 3 has length 2, and so has the
  # one drawn at step 10
  np.testing.assert_array_equal(lens[:, 0], [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(r[:, 0], [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0])
  # stream 1: positions 1..3 of its length-1 sequence at steps 0..2, then a new
  # one at step 3 (drawn before that step's observe, so still at level 1), then
  # one of length 2 at step 7.
  np.testing.assert_array_equal(lens[:, 1], [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(r[:, 1], [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])


def test_tf_function_loop_does_not_retrace():
  task = CopyTask(batch_size=4, max_length=32)
  rng = tf.random.Generator.from_seed(11)
  traces = []

  @tf.function
  def train(state):
    traces.append(1)

    def body(i, state, total):
      state, (x, y, r, _) = task.next(state, rng)
      # scripted "loss": fraction of steps whose target is a blank
      loss = tf.reduce_mean(tf.cast(tf.equal(y, BLANK), tf.float32))
      state = task.observe(state, loss)
      return i + 1, state, total + tf.reduce_sum(tf.cast(r, tf.int32))

    _, state, total = tf.while_loop(
        lambda i, *_: i < 200, body, (tf.constant(0), state, tf.constant(0))
    )
    return state, total

  state = task.init(rng)
  state, total1 = train(state)
  state, total2 = train(state)
  assert len(traces) == 1
  assert train.experimental_get_tracing_count() == 1
  assert int(total1) > 0 and int(total2) > 0
  assert isinstance(state, CopyState)
  m = task.metrics(state)
  assert m["level"].dtype == tf.int32 and m["ema_bits"].dtype == tf.float32


def test_determinism():
  task = CopyTask(batch_size=5, max_length=16)

  def stream(rng):
    state = with_level(task.init(rng), 12)
    return run_steps(task, state, rng, 60)[1:6]

  a = stream(tf.random.Generator.from_seed(42))
  b = stream(tf.random.Generator.from_seed(42))
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  # restoring the generator state reproduces the stream too
  g = tf.random.Generator.from_seed(5)
  saved = tf.identity(g.state)
  c = stream(g)
  g.reset(saved)
  d = stream(g)
  for u, v in zip(c, d):
    np.testing.assert_array_equal(u, v)
  e = stream(tf.random.Generator.from_seed(43))
  assert not np.array_equal(a[0], e[0])
