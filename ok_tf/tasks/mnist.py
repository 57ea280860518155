"""Sequential MNIST: classify a digit from its pixels, one row (or one pixel) per step.

Each of B streams reads one training image at a time (docs/tasks.md, "Sequential MNIST"):

* row by row (the default): T = 28 steps, the input at step s the image's row s, its 28
  pixels / 255 (:class:`~ok_tf.specs.Reals` (28)); pixel by pixel (``pixels=True``): T =
  784 steps of one pixel / 255 each, in row-major order (:class:`~ok_tf.specs.Reals` (1));
* the target at every step is the image's label (:class:`~ok_tf.specs.Classes` (10)),
  but only the last step's loss counts: weight 1 at step T − 1, 0 before it;
* the streams are synchronous: at steps 0, T, 2T, … every stream draws a training image
  uniformly at random (with replacement) and resets there.

The images come from TensorFlow Datasets (``tfds.load("mnist")``), read once into arrays
when the task is built (:func:`load`); the steps gather from a ``tf.constant`` of the
uint8 images (pure TF, static shapes). When MNIST is not on disk and cannot be
downloaded, :func:`load` raises :class:`MnistDataError` with one line naming the download.

Baselines (bits): ``uniform`` log2 10 ≈ 3.3219 (the ``baseline``) and ``marginal``, the
entropy of the training labels' frequencies (the best prediction without the image). The
loss a run reports is that of the steps that count (the last of each image). The accuracy
is not a metric: ``observe`` sees only the loss, not the predictions.

Randomness: ``next`` draws ``[B]`` image indices at every step (used at the images' first
steps only), the stream's axis first, so a shard draws its rows of the whole batch's.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base

SIDE = 28
CLASSES = 10
#: Examples per batch when reading a split into arrays.
READ_BATCH = 10_000
DOWNLOAD_COMMAND = ("python -c \"import tensorflow_datasets as tfds; tfds.load('mnist')\"")


class MnistDataError(RuntimeError):
  """MNIST is not on disk and could not be downloaded; the message says how to get it."""


def load(split: str = "train", data_dir: str | None = None, download: bool = True
         ) -> tuple[np.ndarray, np.ndarray]:
  """The images ``[N, 28, 28]`` uint8 and labels ``[N]`` int32 of an MNIST split, read
  through ``tfds.load("mnist", split=...)`` in batches of :data:`READ_BATCH` (a split read
  with ``batch_size=-1`` needs the split's size in TFDS's metadata, which its mock data
  lacks). Raises MnistDataError when the data is absent and cannot be downloaded."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    dataset = tfds.load("mnist", split=split, data_dir=data_dir or None, download=download)
    batches = list(tfds.as_numpy(dataset.batch(READ_BATCH)))
  except (AssertionError, OSError) as error:
    where = data_dir or "TensorFlow Datasets' folder ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    raise MnistDataError(
        f"MNIST is not in {where} and could not be downloaded ({reason}): download it once "
        f"with {DOWNLOAD_COMMAND} on a machine with internet and copy the mnist folder "
        "there (or pass --mnist_data_dir)") from None
  if not batches:
    raise MnistDataError(f"the MNIST split {split!r} is empty: choose another --mnist_split")
  images = np.concatenate([b["image"] for b in batches]).reshape(-1, SIDE, SIDE)
  labels = np.concatenate([b["label"] for b in batches]).astype(np.int32)
  return images.astype(np.uint8), labels


class MnistState(typing.NamedTuple):
  """The streams' images, the step within them and the images started so far."""
  image: tf.Tensor     # [B] int32: each stream's current image
  position: tf.Tensor  # [] int32: the step within the images, 0 … T − 1
  rounds: tf.Tensor    # [] int64: the images each stream has started


@dataclasses.dataclass(frozen=True, eq=False)
class MnistTask:
  """Sequential MNIST on B streams; see the module docstring."""

  images: np.ndarray = dataclasses.field(repr=False)   # [N, 28, 28] uint8
  labels: np.ndarray = dataclasses.field(repr=False)   # [N] int
  batch_size: int
  pixels: bool = False
  total_streams: int | None = None     # all streams of a sharded run (None: batch_size)

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
    images = np.asarray(self.images)
    labels = np.asarray(self.labels)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or images.shape[0] < 1:
      raise ValueError(f"images must be [N, 28, 28] with N ≥ 1, got {images.shape}")
    if labels.shape != images.shape[:1] or labels.min() < 0 or labels.max() >= CLASSES:
      raise ValueError(f"labels must be [N] classes 0 … 9, got shape {labels.shape}")
    object.__setattr__(self, "images", images.astype(np.uint8))
    object.__setattr__(self, "labels", labels.astype(np.int32))
    if self.total_streams is None:
      object.__setattr__(self, "total_streams", self.batch_size)
    object.__setattr__(self, "_constants", None)

  @property
  def length(self) -> int:
    """T: 28 rows, or 784 pixels."""
    return SIDE * SIDE if self.pixels else SIDE

  @property
  def input_spec(self) -> specs.Reals:
    return specs.Reals(1 if self.pixels else SIDE)

  @property
  def output_spec(self) -> specs.Classes:
    return specs.Classes(CLASSES)

  @property
  def baselines(self) -> dict[str, float]:
    """``uniform`` log2 10 and ``marginal``, the labels' entropy (bits)."""
    mass = np.bincount(self.labels, minlength=CLASSES) / self.labels.size
    return {"uniform": base.uniform_bits(CLASSES),
            "marginal": float(-sum(p * math.log2(p) for p in mass if p > 0))}

  @property
  def baseline(self) -> float:
    return self.baselines["uniform"]

  def shard(self, index: int, count: int) -> "MnistTask":
    """b = B/count streams (their draws: that shard's rows of the whole batch's)."""
    b = base.check_shard(self.batch_size, index, count)
    if count == 1:
      return self
    return dataclasses.replace(self, batch_size=b, total_streams=self.total_streams)

  def describe(self) -> dict:
    return {**base.describe(self), "images": int(self.labels.size),
            "order": "pixels" if self.pixels else "rows", "steps_per_image": self.length}

  def _tensors(self):
    """The images ``[N, T, 28 or 1]`` uint8 and labels as tf.constants, made on first use."""
    if self._constants is None:
      shape = (-1, self.length, self.input_spec.size)
      with tf.init_scope():   # eager constants, even when first called inside a tf.function
        object.__setattr__(self, "_constants", (tf.constant(self.images.reshape(shape)),
                                                tf.constant(self.labels)))
    return self._constants

  def init(self, rng) -> MnistState:
    """Every stream at the start of an image (drawn by the first ``next``)."""
    del rng
    return MnistState(image=tf.zeros([self.batch_size], tf.int32),
                      position=tf.constant(0, tf.int32), rounds=tf.constant(0, tf.int64))

  def next(self, state: MnistState, rng) -> tuple[MnistState, base.Data]:
    """Row (pixel) ``position`` of every stream's image / 255, its label; a new image and
    ``reset`` at position 0; weight 1 at the last position, 0 before."""
    b = self.batch_size
    images, labels = self._tensors()
    drawn = rng.uniform([b], minval=0, maxval=int(self.labels.size), dtype=tf.int32)
    start = tf.equal(state.position, 0)
    image = tf.where(start, drawn, tf.ensure_shape(state.image, [b]))
    at = tf.stack([image, tf.fill([b], state.position)], axis=1)
    inputs = tf.cast(tf.gather_nd(images, at), tf.float32) / 255.0
    last = tf.equal(state.position, self.length - 1)
    data = base.Data(inputs, tf.gather(labels, image), tf.fill([b], start),
                     tf.fill([b], tf.cast(last, tf.float32)))
    return MnistState(image=image, position=tf.math.floormod(state.position + 1, self.length),
                      rounds=state.rounds + tf.cast(start, tf.int64)), data

  def observe(self, state: MnistState, loss) -> MnistState:
    """No-op."""
    del loss
    return state

  def metrics(self, state: MnistState) -> dict[str, tf.Tensor]:
    """``epoch``: images started by all streams / N."""
    epochs = tf.cast(state.rounds, tf.float64) * (self.total_streams / self.labels.size)
    return {"epoch": tf.cast(epochs, tf.float32)}


# ----------------------------------------------------------------------------- the entry


@dataclasses.dataclass
class MnistOptions:
  """The sequential-MNIST task's own configuration (flags of ``--task=mnist``)."""
  mnist_pixels: bool = base.option(False, "Sequential MNIST pixel by pixel (784 steps of one "
                                   "pixel) instead of row by row (28 steps of 28 pixels).")
  mnist_split: str = base.option("train", "The TFDS split to train on, e.g. train or "
                                 "train[:50000].")
  mnist_data_dir: str = base.option("", "TFDS data folder holding mnist (default: "
                                    "$TFDS_DATA_DIR or ~/tensorflow_datasets).")
  mnist_download: bool = base.option(True, "Download MNIST if it is not in the data folder.")


PRESETS = {
    # Trying the code: a small tanh network, row by row; 28 steps per image, so 28k steps
    # read 16k images.
    "quick": dict(cell="tanh", units=32, rank=8, truncation=28, batch_size=16, lr=10 ** -2.5,
                  clip=1.0, steps=28_000, log_every=560, checkpoint_every=5_600),
    # A longer run on a CPU: about 4 passes over the 60k training images.
    "cpu": dict(cell="tanh", units=64, rank=8, truncation=28, batch_size=16, lr=10 ** -3,
                clip=1.0, steps=420_000, log_every=2800, checkpoint_every=28_000),
}


def build(cfg, resume: bool) -> base.Setup:
  """The task on the split ``mnist_split`` (read once through TFDS)."""
  del resume
  images, labels = load(cfg.mnist_split, cfg.mnist_data_dir or None, cfg.mnist_download)
  return base.Setup(MnistTask(images, labels, batch_size=cfg.batch_size,
                              pixels=cfg.mnist_pixels))


def check(cfg) -> None:
  base.need(bool(cfg.mnist_split), "--mnist_split must name a TFDS split, e.g. train")


ENTRY = base.Entry(
    name="mnist", help="sequential MNIST through TFDS: row by row (28 steps) or pixel by "
    "pixel (--mnist_pixels), loss at the last step (docs/tasks.md)",
    options=MnistOptions, presets=PRESETS, build=build, errors=(MnistDataError,), check=check)
