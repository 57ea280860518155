"""The protocol of the training methods and of the online gradient estimators: :class:`Method`
(name, rank rule, label, cost model, hyperparameters), :class:`Estimator` (the state
protocol of docs/algorithms.md §2), and the sizes and costs they report."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ok_tf import cells as cells_lib


class Dims(NamedTuple):
  """The sizes a cost model needs: S (``state``), a = V + n + 1 (``hhat``, rows of W),
  k·n (``columns`` of W) and n (``units``)."""
  state: int
  hhat: int
  columns: int
  units: int

  @classmethod
  def of(cls, cell: cells_lib.KroneckerCell) -> "Dims":
    """The sizes of a built cell."""
    return cls(cell.state_size, cell.hhat_size, cell.kernel_columns, cell.units)

  @classmethod
  def of_config(cls, cell: str, units: int, input_dim: int) -> "Dims":
    """The sizes of the cell named ``cell`` with ``units`` units and one-hot inputs of
    length ``input_dim`` (V), without building it."""
    kind = cells_lib.CELLS[cell]
    n = int(units)
    return cls(kind.state_multiplier * n, int(input_dim) + n + 1, kind.num_gates * n, n)


class Cost(NamedTuple):
  """One step of a method for a whole batch: ``flops`` (a multiply-add counts 2; the
  dominant terms of docs/algorithms.md §8) and ``state_bytes``, what it carries from one
  step to the next (for an estimator, the exact size of ``init(batch)``)."""
  flops: float
  state_bytes: int


def _integer(value) -> str:
  """16, 16.0 → "16"; 2.5 → "2.5"; anything else as str."""
  try:
    f = float(value)
  except (TypeError, ValueError):
    return str(value)
  return str(int(f)) if f == int(f) else f"{f:g}"


class Method:
  """A training method as the flags, the labels, the tables and the cost estimates see it.

  Class attributes: ``name`` (the registry's key, ``--method``); ``order``;
  ``hyperparameters``; ``takes_rank`` (a rank r chosen by the user, shown in the
  label); ``fixed_rank`` (the rank of a method that always has one, e.g. kf's 1, else
  None); ``takes_truncation`` (a truncation length T, shown in the label); ``stochastic``.
  """

  name = ""
  #: Position in :data:`ok_tf.estimators.METHODS`: the order of tables and legends.
  order = 100
  #: The method's own arguments (beyond ``rank``), each a keyword of ``__init__`` and a
  #: config field and flag ``--{name}_{hp.name}`` (:mod:`ok_tf.hyperparameters`).
  hyperparameters: tuple = ()
  takes_rank = False
  fixed_rank: int | None = None
  rank_hint = ""
  takes_truncation = False
  stochastic = False
  #: Whether the method computes the exact gradient (the reference the others are
  #: measured against).
  exact = False
  #: The product that bounds its step from below, timed alone by the benchmark: "ha"
  #: (H_t·A_i, the Kronecker sums), "hg" (H_t·G, exact RTRL) or None.
  dominant_product: str | None = None
  #: Whether its step's stages are public (``linearize``, ``propagate``, ``reduce``), for
  #: the benchmark's breakdown.
  has_stages = False

  @classmethod
  def rank_for(cls, rank, flag: str = "rank") -> int | None:
    """The rank the method runs with, given a requested ``rank`` (None: not given).

    The rank rule: a method that takes a rank needs a positive integer; one with a fixed
    rank accepts that rank or None; the others accept only None.  Raises ValueError
    (naming ``flag``) otherwise.
    """
    if cls.takes_rank:
      if rank is None or int(rank) < 1:
        raise ValueError(f"{flag} must be a positive integer for {cls.name}, got {rank}")
      return int(rank)
    if cls.fixed_rank is not None:
      if rank is not None and int(rank) != cls.fixed_rank:
        raise ValueError(f"{cls.name} has rank {cls.fixed_rank} (got {flag}={rank})"
                         + (f"; {cls.rank_hint}" if cls.rank_hint else ""))
      return cls.fixed_rank
    if rank is not None:
      raise ValueError(f"{cls.name} takes no rank (got {flag}={rank})")
    return None

  @classmethod
  def label(cls, rank=None, truncation=None, settings: dict | None = None) -> str:
    """The label of tables and legends: "ok (r=8)", "tbptt (T=25)", "kf",
    "ok (r=8, balance=False)".

    The rank is shown for a method that takes one, the truncation length for one that
    takes one, and of ``settings`` (its hyperparameters' values) those that differ from
    their declared defaults; anything else given is ignored.
    """
    parts = []
    if cls.takes_rank and rank is not None:
      parts.append(f"r={_integer(rank)}")
    elif cls.takes_truncation and truncation is not None:
      parts.append(f"T={_integer(truncation)}")
    settings = settings or {}
    parts += [f"{hp.name}={settings[hp.name]}" for hp in cls.hyperparameters
              if hp.name in settings and settings[hp.name] != hp.default]
    return f"{cls.name} ({', '.join(parts)})" if parts else cls.name

  @classmethod
  def cost(cls, dims: Dims, rank: int | None = None, batch: int = 1,
           truncation: int | None = None, dtype="float32") -> Cost:
    """Flops and state bytes of one step for ``batch`` streams (see :class:`Cost`)."""
    raise NotImplementedError


def in_xla() -> bool:
  """Whether the ops being built are compiled by XLA (``tf.function(jit_compile=True)``)."""
  try:
    from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return (not tf.executing_eagerly()
          and control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def stream_matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """a[i]·b[i] for every stream i: ``[B, m, k]``·``[B, k, p]`` → ``[B, m, p]``.

  The same product as ``tf.matmul(a, b)``.  With one stream and static shapes it runs as
  one 2-D ``MatMul``, which TensorFlow's CPU kernels run faster than ``BatchMatMulV2``
  with a batch of 1: exact RTRL's step at n = 64, B = 1 is about 10% faster with it
  (docs/performance.md).
  """
  if (a.shape.rank == 3 and b.shape.rank == 3 and a.shape[0] == 1 and b.shape[0] == 1
      and a.shape.is_fully_defined() and b.shape.is_fully_defined()):
    product = tf.matmul(tf.reshape(a, a.shape[1:]), tf.reshape(b, b.shape[1:]))
    return tf.reshape(product, [1] + product.shape.as_list())
  return tf.matmul(a, b)


def dtype_bytes(dtype) -> int:
  return tf.as_dtype(dtype).size


class Estimator(Method):
  """Base class: the cell, the shapes and the shared pieces of the protocol.

  A subclass implements ``init``, ``step``, ``per_example_gradient`` and ``influence``
  (and ``cost``); ``gradient`` defaults to the batch mean of ``per_example_gradient``,
  ``reset`` zeroes every field of the masked rows and ``diagnostics`` reports nothing.
  """

  stochastic = True
  rank: int | None = None

  def __init__(self, cell: cells_lib.KroneckerCell):
    if not cell.built:
      raise ValueError("build the cell first: cell.build((None, input_dim))")
    self.cell = cell
    self.dtype = tf.as_dtype(cell.compute_dtype)
    self.state_size = cell.state_size
    self.hhat_size = cell.hhat_size
    self.columns = cell.kernel_columns
    self.units = cell.units

  def init(self, batch_size: int):
    raise NotImplementedError

  def step(self, state, x, rng: tf.random.Generator):
    raise NotImplementedError

  def per_example_gradient(self, state, dl_ds) -> tf.Tensor:
    """The per-stream estimates (∂L_t/∂s_t)_b G'_{t,b} of dL_t/dW, [B, a, k·n]."""
    raise NotImplementedError

  def influence(self, state) -> tf.Tensor:
    """G'_t as a dense [B, S, a, k·n] tensor (for diagnostics and tests; O(S·a·k·n))."""
    raise NotImplementedError

  def gradient(self, state, dl_ds) -> list:
    """[dL_t/dW ≈ mean_b (∂L_t/∂s_t)_b G'_{t,b}], shape [a, k·n] (one entry per trainable
    variable of the cell): the batch mean of :meth:`per_example_gradient`."""
    return [tf.reduce_mean(self.per_example_gradient(state, tf.cast(dl_ds, self.dtype)),
                           axis=0)]

  def diagnostics(self, state) -> dict:
    """The method's own per-stream diagnostics of its last step, from its state after the
    step: name → ``[B]`` tensor (none by default; OK reports its reduction's)."""
    del state
    return {}

  def reset(self, state, mask):
    """Zero every field of the streams where ``mask`` [B] is True."""
    mask = tf.convert_to_tensor(mask, tf.bool)

    def zero(x):
      m = tf.reshape(mask, [-1] + [1] * (x.shape.rank - 1))
      return tf.where(m, tf.zeros([], x.dtype), x)

    # A pass over the whole approximation state is expensive (O(r n²) per stream):
    # skip it on the steps where no stream resets (99 of 100 on PTB).
    return tf.cond(tf.reduce_any(mask), lambda: tf.nest.map_structure(zero, state),
                   lambda: state)

  def _zeros(self, *shape, dtype=None):
    return tf.zeros(shape, dtype=dtype or self.dtype)

  def _linearize(self, state, x):
    return self.cell.linearize(x, state.h)
