"""A task from the user's own arrays or finite ``tf.data.Dataset``: no task class needed.

N sequences of T steps (docs/tasks.md, "Your own arrays"):

* inputs ``[N, T, d]`` floats (:class:`~ok_tf.specs.Reals` (d)) or ``[N, T]`` integers
  (:class:`~ok_tf.specs.Symbols` (V), V given or max + 1);
* targets ``[N, T]`` integers (:class:`~ok_tf.specs.Classes` (K), K given or max + 1;
  cross-entropy in bits) or ``[N, T, m]`` floats (:class:`~ok_tf.specs.Reals` (m); MSE);
* weights ``[N, T]`` ≥ 0, not all 0 (default 1): w_{t,b} of the step's loss (0: the step
  has no loss, e.g. padding, or all but the last step of a classified sequence).

B streams play whole sequences, synchronously: at steps 0, T, 2T, … every stream starts a
new sequence (``reset`` there) — drawn uniformly at random from the N (``order="random"``)
or, for stream b at its k-th sequence, sequence (k·B + b) mod N (``order="in_order"``:
the B streams together go through the N sequences in order). Bad arrays stop with one
line, an :class:`ArraysError`.

Baselines: Classes — ``uniform`` log2 K (the ``baseline``) and ``marginal``, the entropy
(bits) of the weighted frequencies of the targets (the best constant prediction); Reals —
``mean``, the weighted mean over the steps of (1/m) Σ_j (y_j − ȳ_j)² with ȳ the weighted
mean target (the best constant prediction; the ``baseline``).

The arrays are ``tf.constant``\\ s made once; ``next`` gathers one step of every stream
(static shapes, pure TF). Randomness: ``next`` draws ``[B]`` sequence indices at every
step (used at the sequence starts only; drawn at every step so the generator advances the
same way), the stream's axis first, so a shard draws its rows of the whole batch's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import typing

import numpy as np
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base

ORDERS = ("random", "in_order")
#: The largest integer id (int32).
MAX_ID = 2**31 - 1


class ArraysError(ValueError):
  """Arrays (or a dataset, or an .npz file) that cannot make a task; the message says why."""


def _fail(condition: bool, message: str) -> None:
  if not condition:
    raise ArraysError(message)


def check_inputs(inputs, num_symbols: int | None):
  """(inputs as float32 ``[N, T, d]`` or int32 ``[N, T]``, their spec); ArraysError else."""
  x = np.asarray(inputs)
  if x.dtype.kind in "iu":
    _fail(x.ndim == 2, f"integer inputs must be symbol ids [N, T], got shape {x.shape}: "
          "give ids as [N, T], or real vectors as floats [N, T, d]")
    _fail(x.size > 0, f"inputs are empty (shape {x.shape}): give at least one step")
    _fail(x.min() >= 0 and x.max() < MAX_ID, f"symbol ids must be in 0 … {MAX_ID - 1}, got "
          f"{x.min()} … {x.max()}")
    size = int(x.max()) + 1 if num_symbols is None else int(num_symbols)
    _fail(int(x.max()) < size, f"inputs hold id {x.max()}, not below num_symbols={size}: "
          "pass a larger num_symbols, or leave it unset (max id + 1)")
    return x.astype(np.int32), specs.Symbols(size)
  _fail(x.dtype.kind == "f", f"inputs must be floats [N, T, d] or integer ids [N, T], got "
        f"dtype {x.dtype}")
  _fail(x.ndim == 3, f"float inputs must be [N, T, d], got shape {x.shape}: add a last axis "
        "of 1 for one number per step (x[..., None])")
  _fail(x.size > 0, f"inputs are empty (shape {x.shape}): give at least one step of width ≥ 1")
  with np.errstate(over="ignore"):
    x = x.astype(np.float32)
  _fail(bool(np.isfinite(x).all()), f"inputs hold {np.count_nonzero(~np.isfinite(x))} NaN or "
        "infinite values (in float32): clean or mask them before making the task")
  return x, specs.Reals(int(x.shape[2]))


def check_targets(targets, num_classes: int | None):
  """(targets as int32 ``[N, T]`` or float32 ``[N, T, m]``, their spec); ArraysError else."""
  y = np.asarray(targets)
  if y.dtype.kind in "iu":
    _fail(y.ndim == 2, f"integer targets must be class ids [N, T], got shape {y.shape}: give "
          "classes as [N, T], or real targets as floats [N, T, m]")
    _fail(y.size > 0, f"targets are empty (shape {y.shape})")
    size = int(y.max()) + 1 if num_classes is None else int(num_classes)
    _fail(size >= 1 and y.min() >= 0 and y.max() < size,
          f"targets must be classes in 0 … {size - 1}, got {y.min()} … {y.max()}: "
          + ("pass a larger num_classes, or leave it unset (max + 1)" if y.min() >= 0
             else "map them to 0 … K − 1"))
    return y.astype(np.int32), specs.Classes(size)
  _fail(y.dtype.kind == "f", f"targets must be integer classes [N, T] or floats [N, T, m], "
        f"got dtype {y.dtype}")
  _fail(y.ndim == 3, f"float targets must be [N, T, m], got shape {y.shape}: add a last axis "
        "of 1 for one number per step (y[..., None])")
  _fail(y.size > 0, f"targets are empty (shape {y.shape})")
  with np.errstate(over="ignore"):
    y = y.astype(np.float32)
  _fail(bool(np.isfinite(y).all()), f"targets hold {np.count_nonzero(~np.isfinite(y))} NaN or "
        "infinite values (in float32): clean them, or give those steps weight 0 and any "
        "finite target")
  return y, specs.Reals(int(y.shape[2]))


def check_weights(weights, shape: tuple[int, int]) -> np.ndarray:
  """The weights as float32 ``[N, T]`` (ones if None); ArraysError unless finite, ≥ 0, not
  all 0 and of ``shape``."""
  if weights is None:
    return np.ones(shape, np.float32)
  w = np.asarray(weights)
  _fail(w.dtype.kind in "iuf" and w.dtype.kind != "b",
        f"weights must be numbers [N, T], got dtype {w.dtype}")
  _fail(w.shape == shape, f"weights must be [N, T] = {list(shape)}, got shape {w.shape}")
  w = w.astype(np.float32)
  _fail(bool(np.isfinite(w).all()), "weights hold NaN or infinite values: give finite weights ≥ 0")
  _fail(bool((w >= 0).all()), f"weights must be ≥ 0, got {w.min()}: give 0 to a step "
        "without loss")
  _fail(bool((w > 0).any()), "all weights are 0: no step would have a loss; give weight > 0 "
        "to the steps to learn")
  return w


def baselines(targets: np.ndarray, weights: np.ndarray, output_spec) -> dict[str, float]:
  """The task's baselines (module docstring) from the checked arrays."""
  total = float(weights.sum(dtype=np.float64))
  if isinstance(output_spec, specs.Classes):
    mass = np.bincount(targets.ravel(), weights=weights.ravel().astype(np.float64),
                       minlength=output_spec.size) / total
    marginal = -sum(p * math.log2(p) for p in mass if p > 0)
    return {"uniform": base.uniform_bits(output_spec.size), "marginal": float(marginal)}
  w = weights.astype(np.float64)[..., None]
  y = targets.astype(np.float64)
  centre = (w * y).sum(axis=(0, 1)) / total
  return {"mean": float((w * (y - centre) ** 2).mean(axis=2).sum() / total)}


class ArrayState(typing.NamedTuple):
  """The streams' sequences, the step within them and the sequences started so far."""
  sequence: tf.Tensor  # [B] int32: each stream's current sequence
  position: tf.Tensor  # [] int32: the step within the sequences, 0 … T − 1
  rounds: tf.Tensor    # [] int64: the sequences each stream has started


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayTask:
  """N sequences of T steps played on B streams; see the module docstring. Make it with
  :meth:`from_arrays` or :meth:`from_dataset` (which check the arrays)."""

  inputs: np.ndarray = dataclasses.field(repr=False)
  targets: np.ndarray = dataclasses.field(repr=False)
  weights: np.ndarray = dataclasses.field(repr=False)
  input_spec: typing.Any
  output_spec: typing.Any
  batch_size: int
  order: str = "random"
  first_stream: int = 0                # a shard's first stream among all
  total_streams: int | None = None     # all streams (None: batch_size)

  def __post_init__(self):
    _fail(isinstance(self.batch_size, int) and self.batch_size >= 1,
          f"batch_size must be a positive number of streams, got {self.batch_size!r}")
    _fail(self.order in ORDERS, f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
    shape = self.inputs.shape[:2]
    _fail(self.targets.shape[:2] == shape,
          f"inputs have [N, T] = {list(shape)} but targets {list(self.targets.shape[:2])}: "
          "give one target per input step")
    total = self.batch_size if self.total_streams is None else self.total_streams
    object.__setattr__(self, "total_streams", int(total))
    object.__setattr__(self, "_constants", None)

  @classmethod
  def from_arrays(cls, inputs, targets, weights=None, batch_size: int = 16,
                  num_classes: int | None = None, num_symbols: int | None = None,
                  order: str = "random") -> "ArrayTask":
    """The task of numpy(-like) arrays (module docstring); ArraysError if they are unusable.

    Args:
      inputs: ``[N, T, d]`` floats or ``[N, T]`` integer symbol ids.
      targets: ``[N, T]`` integer classes or ``[N, T, m]`` floats.
      weights: ``[N, T]`` step weights ≥ 0 (None: 1 everywhere).
      batch_size: B, the streams played at once.
      num_classes: K of integer targets (None: max + 1).
      num_symbols: V of integer inputs (None: max + 1).
      order: ``"random"`` or ``"in_order"``, how streams choose their next sequence.
    """
    x, input_spec = check_inputs(inputs, num_symbols)
    y, output_spec = check_targets(targets, num_classes)
    _fail(x.shape[:2] == y.shape[:2], f"inputs have [N, T] = {list(x.shape[:2])} but targets "
          f"{list(y.shape[:2])}: give one target per input step")
    w = check_weights(weights, tuple(x.shape[:2]))
    return cls(x, y, w, input_spec, output_spec, batch_size, order)

  @classmethod
  def from_dataset(cls, dataset: tf.data.Dataset, **kwargs) -> "ArrayTask":
    """The task of a finite dataset of single sequences (``dataset.unbatch()`` a batched
    one): elements ``(inputs, targets)``, ``(inputs, targets, weights)`` or dicts with
    those keys, shaped ``[T, d]`` / ``[T]`` …; read once into arrays, then as
    :meth:`from_arrays` (``kwargs``: its other arguments)."""
    _fail(isinstance(dataset, tf.data.Dataset), f"expected a tf.data.Dataset, got "
          f"{type(dataset).__name__}")
    _fail(int(dataset.cardinality()) != int(tf.data.INFINITE_CARDINALITY),
          "the dataset is infinite: take a finite part (dataset.take(n)) or drop .repeat()")
    columns: dict[str, list] = {}
    for element in dataset.as_numpy_iterator():
      if isinstance(element, dict):
        unknown = set(element) - {"inputs", "targets", "weights"}
        _fail(not unknown and {"inputs", "targets"} <= set(element),
              f"dataset dicts need keys inputs, targets (and weights), got {sorted(element)}")
        items = element
      else:
        _fail(isinstance(element, tuple) and len(element) in (2, 3),
              "dataset elements must be (inputs, targets[, weights]) or a dict of them")
        items = dict(zip(("inputs", "targets", "weights"), element))
      for key, value in items.items():
        columns.setdefault(key, []).append(np.asarray(value))
    _fail(bool(columns), "the dataset is empty: give at least one sequence")
    try:
      arrays = {key: np.stack(values) for key, values in columns.items()}
    except ValueError as error:
      raise ArraysError(f"the dataset's sequences differ in shape ({error}): pad them to one "
                        "length T and give the padding weight 0") from None
    _fail(len(columns.get("weights", columns["inputs"])) == len(columns["inputs"]),
          "some dataset elements have weights and some do not")
    return cls.from_arrays(arrays["inputs"], arrays["targets"], arrays.get("weights"), **kwargs)

  @property
  def num_sequences(self) -> int:
    return int(self.inputs.shape[0])

  @property
  def length(self) -> int:
    """T, the steps of every sequence."""
    return int(self.inputs.shape[1])

  @functools.cached_property
  def baselines(self) -> dict[str, float]:
    """:func:`baselines` of the arrays (computed once)."""
    return baselines(self.targets, self.weights, self.output_spec)

  @property
  def baseline(self) -> float:
    b = self.baselines
    return b["uniform"] if "uniform" in b else b["mean"]

  def fingerprint(self) -> str:
    """sha256 of the arrays' bytes (inputs, targets, weights), as a run records it."""
    digest = hashlib.sha256()
    for array in (self.inputs, self.targets, self.weights):
      digest.update(str((array.dtype.str, array.shape)).encode())
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()

  def shard(self, index: int, count: int) -> "ArrayTask":
    """Streams index·b … (index+1)·b − 1 of these B (their draws: that shard's rows)."""
    b = base.check_shard(self.batch_size, index, count)
    if count == 1:
      return self
    return dataclasses.replace(self, batch_size=b, first_stream=self.first_stream + index * b,
                               total_streams=self.total_streams)

  def describe(self) -> dict:
    return {**base.describe(self), "sequences": self.num_sequences, "length": self.length,
            "order": self.order}

  def _tensors(self):
    """The arrays as tf.constants, made on first use."""
    if self._constants is None:
      with tf.init_scope():   # eager constants, even when first called inside a tf.function
        object.__setattr__(self, "_constants", tuple(
            tf.constant(a) for a in (self.inputs, self.targets, self.weights)))
    return self._constants

  def init(self, rng) -> ArrayState:
    """Every stream at the start of a sequence (chosen by the first ``next``)."""
    del rng
    return ArrayState(sequence=tf.zeros([self.batch_size], tf.int32),
                      position=tf.constant(0, tf.int32), rounds=tf.constant(0, tf.int64))

  def next(self, state: ArrayState, rng) -> tuple[ArrayState, base.Data]:
    """Step ``position`` of every stream's sequence; at position 0 a new sequence (random
    or in order) and ``reset``; the weight is the sequence's at that step."""
    b, n = self.batch_size, self.num_sequences
    inputs, targets, weights = self._tensors()
    drawn = rng.uniform([b], minval=0, maxval=n, dtype=tf.int32)
    if self.order == "in_order":
      streams = tf.range(self.first_stream, self.first_stream + b, dtype=tf.int64)
      drawn = tf.cast(tf.math.floormod(state.rounds * self.total_streams + streams, n), tf.int32)
    start = tf.equal(state.position, 0)
    sequence = tf.where(start, drawn, tf.ensure_shape(state.sequence, [b]))
    at = tf.stack([sequence, tf.fill([b], state.position)], axis=1)
    data = base.Data(tf.gather_nd(inputs, at), tf.gather_nd(targets, at), tf.fill([b], start),
                     tf.gather_nd(weights, at))
    position = tf.math.floormod(state.position + 1, self.length)
    rounds = state.rounds + tf.cast(start, tf.int64)
    return ArrayState(sequence=sequence, position=position, rounds=rounds), data

  def observe(self, state: ArrayState, loss) -> ArrayState:
    """No-op."""
    del loss
    return state

  def metrics(self, state: ArrayState) -> dict[str, tf.Tensor]:
    """``epoch``: sequences started by all streams / N."""
    epochs = tf.cast(state.rounds, tf.float64) * (self.total_streams / self.num_sequences)
    return {"epoch": tf.cast(epochs, tf.float32)}


# ----------------------------------------------------------------------------- the entry


@dataclasses.dataclass
class ArraysOptions:
  """The arrays task's own configuration (flags of ``--task=arrays``)."""
  arrays_file: str = base.option(
      "", "An .npz file with arrays inputs ([N, T, d] floats or [N, T] ids), targets ([N, T] "
      "classes or [N, T, m] floats) and optionally weights ([N, T]).")
  arrays_order: str = base.option("random", "How each stream picks its next sequence.",
                                  choices=ORDERS)
  arrays_num_classes: int = base.option(0, "K of integer targets (0: max + 1).")
  arrays_num_symbols: int = base.option(0, "V of integer inputs (0: max + 1).")
  arrays_sha256: str = base.option(
      "", "The arrays' fingerprint, recorded by the run (set automatically).")


PRESETS = {
    # Trying the code on a small problem: minutes on a CPU.
    "quick": dict(cell="tanh", units=32, rank=8, truncation=20, batch_size=16, lr=10 ** -2.5,
                  clip=1.0, steps=10_000, log_every=500, checkpoint_every=5_000),
    # A longer run of a CPU-size network.
    "cpu": dict(cell="tanh", units=64, rank=8, truncation=20, batch_size=16, lr=10 ** -3,
                clip=1.0, steps=50_000, log_every=1000, checkpoint_every=10_000),
}

KEYS = ("inputs", "targets", "weights")


def load_npz(path: str, **kwargs) -> ArrayTask:
  """The task of an .npz file's arrays ``inputs``, ``targets`` and optional ``weights``."""
  _fail(os.path.isfile(path), f"--arrays_file={path} does not exist: give an .npz file "
        "(numpy.savez(path, inputs=..., targets=..., weights=...))")
  try:
    with np.load(path, allow_pickle=False) as data:
      unknown = sorted(set(data.files) - set(KEYS))
      _fail(not unknown and {"inputs", "targets"} <= set(data.files),
            f"{path} holds arrays {sorted(data.files)}: it needs inputs and targets (and "
            "optionally weights), nothing else")
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError) as error:
    if isinstance(error, ArraysError):
      raise
    raise ArraysError(f"cannot read {path} as an .npz file of arrays ({error})") from None
  return ArrayTask.from_arrays(arrays["inputs"], arrays["targets"], arrays.get("weights"),
                               **kwargs)


def build(cfg, resume: bool) -> base.Setup:
  """The task of ``--arrays_file``; its fingerprint recorded (a resumed run's must match)."""
  task = load_npz(cfg.arrays_file, batch_size=cfg.batch_size, order=cfg.arrays_order,
                  num_classes=cfg.arrays_num_classes or None,
                  num_symbols=cfg.arrays_num_symbols or None)
  fingerprint = task.fingerprint()
  if resume and cfg.arrays_sha256 and cfg.arrays_sha256 != fingerprint:
    raise ArraysError(f"the arrays in {cfg.arrays_file} differ from the run's (sha256 "
                      f"{cfg.arrays_sha256[:12]}… recorded, {fingerprint[:12]}… now): resume "
                      "with the same arrays, or choose another --run_dir")
  return base.Setup(task, config=dataclasses.replace(cfg, arrays_sha256=fingerprint))


def check(cfg) -> None:
  base.need(bool(cfg.arrays_file), "--task=arrays needs --arrays_file: an .npz file with "
            "arrays inputs, targets and optionally weights")
  base.need(cfg.arrays_num_classes >= 0 and cfg.arrays_num_symbols >= 0,
            "--arrays_num_classes and --arrays_num_symbols must be ≥ 0 (0: max + 1)")


ENTRY = base.Entry(
    name="arrays", help="your own sequences from an .npz file (--arrays_file: inputs, "
    "targets, weights; docs/tasks.md)",
    options=ArraysOptions, presets=PRESETS, build=build, errors=(ArraysError,), check=check)
