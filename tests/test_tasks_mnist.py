"""Tests for ok_tf.tasks.mnist (sequential MNIST), offline: TFDS's mock data, synthetic
images, and the one-line error when MNIST is absent."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base
from ok_tf.tasks import mnist
import task_steps


def synthetic(n=6):
  """Image i: pixel (r, c) = (3 i + r + c) mod 256; label i mod 10."""
  i, r, c = np.meshgrid(np.arange(n), np.arange(28), np.arange(28), indexing="ij")
  return ((3 * i + r + c) % 256).astype(np.uint8), np.arange(n) % 10


def test_row_by_row_streams_read_whole_images_with_the_loss_at_the_last_row():
  images, labels = synthetic()
  task = mnist.MnistTask(images, labels, batch_size=4)
  assert task.input_spec == specs.Reals(28) and task.output_spec == specs.Classes(10)
  assert isinstance(task, base.Task)
  state, data = task_steps.play(task, 3 * 28, tf.random.Generator.from_seed(0))
  assert data.inputs.shape == (84, 4, 28) and data.inputs.dtype == np.float32
  for k in range(3):
    block = slice(28 * k, 28 * (k + 1))
    index = (data.inputs[28 * k, :, 0] * 255).round().astype(int) // 3
    np.testing.assert_allclose(data.inputs[block], np.transpose(images[index] / 255.0, (1, 0, 2)),
                               rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.targets[block], np.tile(labels[index], (28, 1)))
  position = np.arange(84) % 28
  np.testing.assert_array_equal(data.reset, np.tile(position[:, None] == 0, (1, 4)))
  np.testing.assert_array_equal(data.weight, np.tile((position == 27)[:, None], (1, 4)))
  assert task.metrics(state)["epoch"].numpy() == pytest.approx(3 * 4 / 6)


def test_pixel_by_pixel():
  images, labels = synthetic(3)
  task = mnist.MnistTask(images, labels, batch_size=2, pixels=True)
  assert task.input_spec == specs.Reals(1) and task.length == 784
  _, data = task_steps.play(task, 784, tf.random.Generator.from_seed(1))
  index = (data.inputs[0, :, 0] * 255).round().astype(int) // 3
  np.testing.assert_allclose(data.inputs[:, :, 0], images[index].reshape(2, 784).T / 255.0,
                             rtol=0, atol=1e-7)
  assert data.weight[-1].all() and not data.weight[:-1].any()


def test_images_are_drawn_uniformly():
  images, labels = synthetic(4)
  task = mnist.MnistTask(images, labels, batch_size=8)
  _, data = task_steps.play(task, 28 * 200, tf.random.Generator.from_seed(2))
  index = (data.inputs[::28, :, 0] * 255).round().astype(int) // 3
  counts = np.bincount(index.ravel(), minlength=4)
  n = index.size
  assert np.all(np.abs(counts / n - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / n))


def test_baselines():
  images, _ = synthetic(4)
  task = mnist.MnistTask(images, np.array([0, 0, 1, 2]), batch_size=1)
  assert task.baselines["uniform"] == pytest.approx(math.log2(10))
  assert task.baselines["marginal"] == pytest.approx(1.5)
  assert task.baseline == task.baselines["uniform"]


def test_a_task_runs_in_several_compiled_functions_and_eagerly():
  images, labels = synthetic(3)
  task = mnist.MnistTask(images, labels, batch_size=2)
  rng = tf.random.Generator.from_seed(0)
  task_steps.play(task, 3, rng)
  task_steps.play(task, 3, rng)
  _, data = task.next(task.init(rng), rng)
  assert data.inputs.shape == (2, 28)


def test_shards_play_the_single_device_streams():
  images, labels = synthetic(5)
  task_steps.assert_same_as_sharded(mnist.MnistTask(images, labels, batch_size=4), 40)


@dataclasses.dataclass
class Config(mnist.MnistOptions):
  batch_size: int = 4


def test_entry_loads_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    images, labels = mnist.load("train", download=False)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int32
    assert 0 <= labels.min() and labels.max() < 10
    setup = mnist.ENTRY.build(Config(mnist_download=False, mnist_pixels=True), False)
  assert setup.task.input_spec == specs.Reals(1) and setup.task.batch_size == 4
  _, data = task_steps.play(setup.task, 5, tf.random.Generator.from_seed(0))
  assert data.inputs.shape == (5, 4, 1) and 0.0 <= data.inputs.min() <= data.inputs.max() <= 1.0


def test_absent_data_stops_with_one_line_naming_the_download(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(mnist.MnistDataError) as error:
    mnist.load("train", data_dir=str(tmp_path), download=False)
  message = str(error.value)
  assert "\n" not in message and "tfds.load('mnist')" in message and str(tmp_path) in message
  assert mnist.MnistDataError in mnist.ENTRY.errors


def test_bad_images():
  with pytest.raises(ValueError, match="images must be"):
    mnist.MnistTask(np.zeros((2, 28, 27), np.uint8), np.zeros(2), batch_size=1)
  with pytest.raises(ValueError, match="labels must be"):
    mnist.MnistTask(np.zeros((2, 28, 28), np.uint8), np.array([0, 10]), batch_size=1)
