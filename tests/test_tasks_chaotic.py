"""Tests for ok_tf.tasks.chaotic: fixed points, attractor bounds, the standardised series'
statistics and baselines, and the TF generator against a plain numpy integration."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ok_tf.tasks import chaotic
import task_steps

NAMES = ("mackey_glass", "henon", "lorenz")


def both(step, state):
  """``step`` applied to a numpy array and to the same values as a TF tensor."""
  return step(np.array(state, np.float64)), step(tf.constant(state, tf.float64)).numpy()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_henon_fixed_points(sign):
  a, b = chaotic.HENON_A, chaotic.HENON_B
  x = (-(1 - b) + sign * math.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a)
  for out in both(chaotic.henon_step, [[x, b * x]]):
    np.testing.assert_allclose(out, [[x, b * x]], rtol=0, atol=1e-14)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_lorenz_fixed_points(sign):
  beta, rho = chaotic.LORENZ_BETA, chaotic.LORENZ_RHO
  c = sign * math.sqrt(beta * (rho - 1))
  point = [[c, c, rho - 1], [0.0, 0.0, 0.0]]
  for out in both(chaotic.lorenz_step, point):
    np.testing.assert_allclose(out, point, rtol=0, atol=1e-12)


def test_mackey_glass_fixed_point():
  # x* = 1: 0.2·1/(1 + 1) − 0.1·1 = 0 (and x* = 0).
  history = np.ones((2, chaotic.MG_LAGS + 1))
  history[1] = 0.0
  for out in both(chaotic.mackey_glass_step, history):
    np.testing.assert_allclose(out, history, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_tf_steps_equal_the_numpy_integration(name):
  task = chaotic.ChaoticTask(batch_size=4, series=name)
  system = task.system
  state = task.init(tf.random.Generator.from_seed(4))
  _, data = task_steps.play(task, 30, tf.random.Generator.from_seed(0), state)
  series = chaotic.reference(system, state.system.numpy(), 31, burn_in=0)
  z = (series - system.mean) / system.std
  np.testing.assert_allclose(data.inputs[:, :, 0], z[:, :-1].T, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(data.targets[:, :, 0], z[:, 1:].T, rtol=1e-6, atol=1e-6)
  # The state itself, in float64, ten samples on.
  tf_state = state.system
  np_state = state.system.numpy()
  for _ in range(10):
    tf_state, np_state = system.advance(tf_state), system.advance(np_state)
  np.testing.assert_allclose(tf_state.numpy(), np_state, rtol=1e-11, atol=1e-12)


BOUNDS = {"mackey_glass": (0.3, 1.45), "henon": (-1.5, 1.5), "lorenz": (-25.0, 25.0)}


@pytest.mark.parametrize("name", NAMES)
def test_standardised_series_statistics_and_attractor_bounds(name):
  task = chaotic.ChaoticTask(batch_size=32, series=name)
  system = task.system
  _, data = task_steps.play(task, 1000, tf.random.Generator.from_seed(7))
  z = data.inputs[:, :, 0].astype(np.float64)            # [T, B]
  assert data.reset[0].all() and not data.reset[1:].any()
  np.testing.assert_array_equal(data.weight, 1.0)
  np.testing.assert_array_equal(data.inputs[1:], data.targets[:-1])
  low, high = BOUNDS[name]
  x = z * system.std + system.mean
  assert low < x.min() and x.max() < high
  # Independent streams: standard errors from the spread of their own means.
  root = math.sqrt(z.shape[1])
  means, squares = z.mean(axis=0), (z ** 2).mean(axis=0)
  assert abs(means.mean()) <= 4 * means.std() / root + 1e-3
  assert abs(squares.mean() - 1.0) <= 4 * squares.std() / root + 1e-3
  last = ((data.targets - data.inputs)[:, :, 0].astype(np.float64) ** 2).mean(axis=0)
  assert abs(last.mean() - task.baselines["last_value"]) <= 4 * last.std() / root + 1e-4


def test_lorenz_z_stays_in_its_bounds():
  system = chaotic.SERIES["lorenz"]
  state = system.initial(np.random.default_rng(3).uniform(size=(32, 3)))
  for _ in range(system.burn_in):
    state = system.advance(state)
  for _ in range(2000):
    state = system.advance(state)
    assert (state[:, 2] > 0).all() and (state[:, 2] < 50).all()
    assert (np.abs(state[:, :2]) < 30).all()


@pytest.mark.parametrize("name", NAMES)
def test_stated_constants_match_a_fresh_run(name):
  system = chaotic.SERIES[name]
  fresh = chaotic.measure(name, streams=200, samples=1000, seed=1,
                          mean=0.0 if name == "lorenz" else None)
  slack = 4 * math.sqrt(1 + 200 / 2000)       # the stated values' own error: 2000 streams
  if name != "lorenz":
    assert abs(fresh["mean"] - system.mean) <= slack * fresh["mean_se"] + 1e-5
  assert abs(fresh["std"] - system.std) <= slack * fresh["std_se"] + 1e-4
  for key, value in system.baselines.items():
    assert abs(fresh["baselines"][key] - value) <= slack * fresh["baselines_se"][key] + 1e-5, key


def test_shards_play_the_single_device_streams():
  task_steps.assert_same_as_sharded(chaotic.ChaoticTask(batch_size=4, series="henon"), 20)


def test_entries_build_their_series():
  cfg = type("Cfg", (), dict(batch_size=8))
  for name in NAMES:
    entry = getattr(chaotic, name.upper())
    assert entry.name == name
    task = entry.build(cfg, False).task
    assert task.series == name and task.batch_size == 8
    assert task.input_spec.size == 1 and task.output_spec.size == 1
    assert task.baseline == 1.0
    assert task.baselines["no_memory"] < task.baselines["mean"]
    assert task.describe()["series"] == name
  with pytest.raises(ValueError, match="unknown series"):
    chaotic.ChaoticTask(batch_size=2, series="rossler")
