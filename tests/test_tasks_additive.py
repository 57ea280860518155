"""Tests for ok_tf.tasks.additive: the baselines against the formula and a large sample."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ok_tf.tasks import additive
import task_steps


def h2(p):
  return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_baselines_match_the_closed_forms():
  # p over (x_{t-t1}, x_{t-t2}) = 00, 10, 01, 11: 1/2, 1, 1/4, 3/4.
  expected = {"no_memory": h2(5 / 8), "first": (h2(3 / 8) + h2(7 / 8)) / 2,
              "both": (h2(0.5) + h2(1.0) + h2(0.25) + h2(0.75)) / 4}
  got = additive.AdditiveTask(batch_size=4).baselines
  for name, value in expected.items():
    assert got[name] == pytest.approx(value, abs=1e-12)
  assert got["no_memory"] == pytest.approx(0.9544, abs=1e-4)
  assert got["first"] == pytest.approx(0.7490, abs=1e-4)
  assert got["both"] == pytest.approx(0.6556, abs=1e-4)
  assert additive.AdditiveTask(batch_size=4).baseline == got["no_memory"]


def sample(task, steps, seed):
  """Inputs with the drawn history in front ([B, H + steps]) and targets [B, steps]."""
  rng = tf.random.Generator.from_seed(seed)
  state = task.init(rng)
  history = state.history.numpy()
  _, data = task_steps.play(task, steps, rng, state)
  return np.concatenate([history, data.inputs.T], axis=1), data.targets.T, data


@pytest.mark.parametrize("t1,t2", [(3, 8), (5, 2)])
def test_sample_cross_entropies_match_the_baselines(t1, t2):
  task = additive.AdditiveTask(batch_size=64, t1=t1, t2=t2)
  steps = 2000
  x, y, _ = sample(task, steps, seed=1)
  h = task.memory
  first = x[:, h - t1:h - t1 + steps].ravel()
  second = x[:, h - t2:h - t2 + steps].ravel()
  y = y.ravel()
  n = y.size
  for (a, b) in [(0, 0), (1, 0), (0, 1), (1, 1)]:
    cell = (first == a) & (second == b)
    p = additive.probability(a, b)
    se = math.sqrt(p * (1 - p) / cell.sum())
    assert abs(y[cell].mean() - p) <= 4 * se + 1e-12, (a, b)
  for name, keys in [("no_memory", []), ("first", [first]), ("both", [first, second])]:
    # The empirical conditional frequencies' cross-entropy, and its standard error.
    code = sum(k * 2 ** i for i, k in enumerate(keys)) if keys else np.zeros(n, int)
    q = np.zeros(n)
    for c in np.unique(code):
      q[code == c] = y[code == c].mean()
    likelihood = np.where(y == 1, q, 1 - q)
    bits = -np.log2(np.maximum(likelihood, 1e-300))
    se = bits.std() / math.sqrt(n)
    assert abs(bits.mean() - task.baselines[name]) <= 4 * se, name


def test_inputs_are_fair_bits_and_the_streams_never_reset_after_step_0():
  task = additive.AdditiveTask(batch_size=16)
  x, _, data = sample(task, 500, seed=2)
  assert data.inputs.dtype == np.int32 and data.targets.dtype == np.int32
  assert data.inputs.shape == (500, 16) and data.targets.shape == (500, 16)
  assert set(np.unique(x)) <= {0, 1}
  n = x.size
  assert abs(x.mean() - 0.5) <= 4 * 0.5 / math.sqrt(n)
  assert data.reset[0].all() and not data.reset[1:].any()
  np.testing.assert_array_equal(data.weight, 1.0)
  assert task.input_spec.size == 2 and task.output_spec.size == 2


def test_shards_play_the_single_device_streams():
  task_steps.assert_same_as_sharded(additive.AdditiveTask(batch_size=8), 40)


def test_bad_delays_and_entry():
  with pytest.raises(ValueError, match="delays"):
    additive.AdditiveTask(batch_size=4, t1=3, t2=3)
  with pytest.raises(ValueError, match="delays"):
    additive.AdditiveTask(batch_size=4, t1=0, t2=3)
  cfg = type("Cfg", (), dict(batch_size=4, additive_t1=2, additive_t2=2))
  with pytest.raises(ValueError, match="must differ"):
    additive.ENTRY.check(cfg)
  cfg.additive_t2 = 6
  additive.ENTRY.check(cfg)
  task = additive.ENTRY.build(cfg, False).task
  assert (task.t1, task.t2) == (2, 6)
  described = task.describe()
  assert described["t1"] == 2 and described["baseline"] == pytest.approx(0.9544, abs=1e-4)
