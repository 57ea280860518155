"""Tests for ok_tf.tasks.arrays: a task from the user's arrays, a dataset or an .npz file."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import arrays
from ok_tf.tasks import base
from ok_tf.tasks.arrays import ArraysError, ArrayTask
import task_steps


def numbered(n=5, t=3, d=2):
  """Inputs whose value says (sequence, step): x[i, s] = 10 i + s, every column."""
  x = (10 * np.arange(n)[:, None] + np.arange(t)[None, :]).astype(np.float64)
  return np.repeat(x[:, :, None], d, axis=2), (np.arange(n)[:, None] % 3 + 0 * x).astype(np.int64)


def test_in_order_streams_play_whole_sequences_and_reset_at_their_start():
  x, y = numbered(n=5, t=3)
  w = np.ones((5, 3))
  w[:, :2] = 0.0                                     # loss at the last step only
  task = ArrayTask.from_arrays(x, y, w, batch_size=2, order="in_order")
  assert task.input_spec == specs.Reals(2) and task.output_spec == specs.Classes(3)
  assert isinstance(task, base.Task)
  state, data = task_steps.play(task, 12, tf.random.Generator.from_seed(0))
  assert data.inputs.shape == (12, 2, 2) and data.inputs.dtype == np.float32
  assert data.targets.shape == (12, 2) and data.targets.dtype == np.int32
  sequence = (data.inputs[:, :, 0] // 10).astype(int)
  step = (data.inputs[:, :, 0] % 10).astype(int)
  # Round k: stream b plays sequence (2k + b) mod 5.
  expected = np.array([[(2 * k + b) % 5 for b in range(2)] for k in range(4)])
  np.testing.assert_array_equal(sequence, np.repeat(expected, 3, axis=0))
  np.testing.assert_array_equal(step, np.tile(np.arange(3), 4)[:, None] + 0 * step)
  np.testing.assert_array_equal(data.reset, step == 0)
  np.testing.assert_array_equal(data.weight, (step == 2).astype(np.float32))
  np.testing.assert_array_equal(data.targets, sequence % 3)
  assert task.metrics(state)["epoch"].numpy() == pytest.approx(4 * 2 / 5)


def test_random_order_draws_sequences_uniformly():
  x, y = numbered(n=4, t=2, d=1)
  task = ArrayTask.from_arrays(x, y, batch_size=8)
  _, data = task_steps.play(task, 2 * 500, tf.random.Generator.from_seed(1))
  starts = data.inputs[::2, :, 0].astype(int) // 10          # [500, 8]
  np.testing.assert_array_equal(data.inputs[1::2, :, 0] // 10, starts)   # whole sequences
  counts = np.bincount(starts.ravel(), minlength=4)
  n = starts.size
  assert np.all(np.abs(counts / n - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / n))


def test_symbol_inputs_real_targets_and_baselines():
  ids = np.array([[0, 1, 2], [2, 1, 0]])
  y = np.array([[[1.0], [2.0], [3.0]], [[3.0], [4.0], [5.0]]])
  w = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 2.0]])
  task = ArrayTask.from_arrays(ids, y, w, batch_size=2, num_symbols=5)
  assert task.input_spec == specs.Symbols(5) and task.output_spec == specs.Reals(1)
  values, weights = np.array([1, 2, 3, 4, 5.0]), np.array([1, 1, 1, 1, 2.0])
  centre = (values * weights).sum() / weights.sum()
  expected = (weights * (values - centre) ** 2).sum() / weights.sum()
  assert task.baselines == {"mean": pytest.approx(expected)} and task.baseline == task.baselines["mean"]
  _, data = task_steps.play(task, 3, tf.random.Generator.from_seed(0))
  assert data.inputs.dtype == np.int32 and data.targets.shape == (3, 2, 1)
  classes = ArrayTask.from_arrays(ids, np.array([[0, 0, 1], [1, 1, 1]]), batch_size=1,
                                  num_classes=4)
  p = np.array([2, 4]) / 6
  assert classes.baselines["uniform"] == 2.0
  assert classes.baselines["marginal"] == pytest.approx(-(p * np.log2(p)).sum())


def test_from_dataset_equals_from_arrays():
  x, y = numbered(n=4, t=3)
  w = np.ones((4, 3), np.float32)
  ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y, w))
  a = ArrayTask.from_dataset(ds, batch_size=2, order="in_order")
  b = ArrayTask.from_arrays(x, y, w, batch_size=2, order="in_order")
  assert a.fingerprint() == b.fingerprint()
  d = tf.data.Dataset.from_tensor_slices({"inputs": x, "targets": y})
  assert ArrayTask.from_dataset(d, batch_size=2).fingerprint() == a.fingerprint()
  with pytest.raises(ArraysError, match="infinite"):
    ArrayTask.from_dataset(ds.repeat(), batch_size=2)
  with pytest.raises(ArraysError, match="empty"):
    ArrayTask.from_dataset(ds.take(0), batch_size=2)
  ragged = tf.data.Dataset.from_generator(
      lambda: iter([(np.zeros((2, 1), np.float32), np.zeros(2, np.int64)),
                    (np.zeros((3, 1), np.float32), np.zeros(3, np.int64))]),
      output_signature=(tf.TensorSpec([None, 1]), tf.TensorSpec([None], tf.int64)))
  with pytest.raises(ArraysError, match="pad them"):
    ArrayTask.from_dataset(ragged, batch_size=2)


GOOD_X, GOOD_Y = np.zeros((4, 3, 2)), np.zeros((4, 3), np.int64)
NAN_X = GOOD_X.copy()
NAN_X[1, 2, 0] = np.nan
INF_Y = np.zeros((4, 3, 1))
INF_Y[0, 0, 0] = np.inf


@pytest.mark.parametrize("kwargs,message", [
    (dict(inputs=np.zeros((4, 3))), "float inputs must be \\[N, T, d\\]"),
    (dict(inputs=np.zeros((4, 3, 2), np.int32)), "integer inputs must be symbol ids"),
    (dict(inputs=np.zeros((4, 3, 2), bool)), "dtype bool"),
    (dict(inputs=np.array([["a"] * 3] * 4)), "inputs must be floats"),
    (dict(inputs=np.zeros((5, 3, 2))), "inputs have \\[N, T\\] = \\[5, 3\\] but targets \\[4, 3\\]"),
    (dict(inputs=np.zeros((4, 2, 2))), "\\[4, 2\\] but targets \\[4, 3\\]"),
    (dict(inputs=np.zeros((0, 3, 2))), "empty"),
    (dict(inputs=NAN_X), "1 NaN or infinite"),
    (dict(inputs=np.full((4, 3, 1), 1e300)), "NaN or infinite values \\(in float32\\)"),
    (dict(inputs=-np.ones((4, 3), np.int64)), "symbol ids must be in"),
    (dict(inputs=np.full((4, 3), 5), num_symbols=5), "not below num_symbols=5"),
    (dict(targets=np.zeros((4, 3, 2), np.int64)), "integer targets must be class ids"),
    (dict(targets=np.zeros((4, 3))), "float targets must be \\[N, T, m\\]"),
    (dict(targets=np.full((4, 3), 3), num_classes=3), "classes in 0 … 2, got 3 … 3: pass a larger"),
    (dict(targets=np.full((4, 3), -1)), "map them to 0"),
    (dict(targets=INF_Y), "targets hold 1 NaN"),
    (dict(weights=np.ones((4, 2))), "weights must be \\[N, T\\]"),
    (dict(weights=-np.ones((4, 3))), "weights must be ≥ 0"),
    (dict(weights=np.zeros((4, 3))), "all weights are 0"),
    (dict(weights=np.full((4, 3), np.nan)), "weights hold NaN"),
    (dict(batch_size=0), "batch_size must be a positive"),
    (dict(order="shuffled"), "order must be one of random, in_order"),
])
def test_bad_arrays_stop_with_one_line(kwargs, message):
  args = dict(inputs=GOOD_X, targets=GOOD_Y)
  args.update(kwargs)
  with pytest.raises(ArraysError, match=message) as error:
    ArrayTask.from_arrays(**args)
  assert "\n" not in str(error.value)


def test_shards_play_the_single_device_streams():
  x, y = numbered(n=7, t=3)
  for order in arrays.ORDERS:
    task_steps.assert_same_as_sharded(ArrayTask.from_arrays(x, y, batch_size=4, order=order), 15)


@dataclasses.dataclass
class Config(arrays.ArraysOptions):
  batch_size: int = 16


def test_entry_reads_an_npz_file(tmp_path):
  x, y = numbered(n=6, t=4)
  path = tmp_path / "data.npz"
  np.savez(path, inputs=x, targets=y)
  cfg = Config(batch_size=3, arrays_file=str(path), arrays_order="in_order",
               arrays_num_classes=5)
  arrays.ENTRY.check(cfg)
  setup = arrays.ENTRY.build(cfg, False)
  assert setup.task.output_spec == specs.Classes(5) and setup.task.batch_size == 3
  assert setup.config.arrays_sha256 == setup.task.fingerprint()
  cfg.arrays_sha256 = "0" * 64
  with pytest.raises(ArraysError, match="differ from the run's"):
    arrays.ENTRY.build(cfg, True)
  np.savez(tmp_path / "bad.npz", inputs=x, labels=y)
  cfg.arrays_file = str(tmp_path / "bad.npz")
  with pytest.raises(ArraysError, match="it needs inputs and targets"):
    arrays.ENTRY.build(cfg, False)
  cfg.arrays_file = str(tmp_path / "none.npz")
  with pytest.raises(ArraysError, match="does not exist"):
    arrays.ENTRY.build(cfg, False)
  (tmp_path / "text.npz").write_text("not a zip")
  cfg.arrays_file = str(tmp_path / "text.npz")
  with pytest.raises(ArraysError, match="cannot read"):
    arrays.ENTRY.build(cfg, False)
  cfg.arrays_file = ""
  with pytest.raises(ValueError, match="needs --arrays_file"):
    arrays.ENTRY.check(cfg)
  assert ArraysError in arrays.ENTRY.errors


def test_a_task_runs_in_several_compiled_functions_and_eagerly():
  x, y = numbered(n=3, t=2)
  task = ArrayTask.from_arrays(x, y, batch_size=2, order="in_order")
  rng = tf.random.Generator.from_seed(0)
  first = task_steps.play(task, 4, rng)[1]
  second = task_steps.play(task, 4, rng)[1]
  np.testing.assert_array_equal(first.inputs, second.inputs)
  _, data = task.next(task.init(rng), rng)
  np.testing.assert_array_equal(data.inputs, first.inputs[0])
