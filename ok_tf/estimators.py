"""Gradient estimators for online learning of recurrent networks, behind one protocol, and
the registry of every training method.

Every estimator tracks, per stream b of a batch, the recurrent state s_t and an
approximation G'_t of the influence matrix G_t = ds_t/dW (docs/algorithms.md §2):

    G_t = H_t G_{t−1} + ĥ_t ⊗ D_t,      G_0 = 0
    dL_t/dW = (∂L_t/∂s_t) G_t

The protocol (all methods pure in the state, so they can live in ``tf.function`` loops)::

    est = ok_tf.estimators.get(name, cell, rank=r)   # any estimator name of METHODS
    state = est.init(batch_size)          # zero recurrent and approximation state
    state = est.step(state, x, rng)       # one time step, x: [B, input_dim]
    state.h                               # s_t, [B, state_size]
    est.per_example_gradient(state, dl_ds)  # [B, a, k·n]: (∂L_t/∂s_t)_b G'_{t,b} per stream
    est.gradient(state, dl_ds)            # [dL_t/dW]: the batch mean of the above, a list
                                          # matching cell.trainable_variables
    est.influence(state)                  # G'_t, dense [B, S, a, k·n] (diagnostics, tests)
    state = est.reset(state, mask)        # zero state and approximation where mask [B]
    run_sequence(est, state, xs, loss_fn, targets, rng)   # T steps [T, B, d] in one
                                          # compiled loop: Σ_t ĝ_t and the final state

``dl_ds`` [B, S] is each stream's own ∂L_t/∂s_t (not that of a batch mean). States are
``NamedTuple`` s of tensors whose fields all have the batch as leading axis.

The registry :data:`METHODS` lists every training method, in the order of tables and
legends: the estimators and TBPTT (which :class:`ok_tf.training.TBPTTTrainer` runs). Each
entry is a :class:`Method` and carries its name, its rank rule (:meth:`Method.rank_for`),
whether it takes a truncation length, its label (:meth:`Method.label`, "ok (r=8)",
"tbptt (T=25)", "kf") and its cost model (:meth:`Method.cost`: flops and state bytes per
step). The flags, the run labels, the tables, the benchmark, the noise study and the
diagnostics read it; a new estimator is a subclass of :class:`Estimator` added to it.
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ok_tf import cells as cells_lib
from ok_tf import kronecker


# ----------------------------------------------------------------------------- methods


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

  Class attributes: ``name``; ``takes_rank`` (a rank r chosen by the user, shown in the
  label); ``fixed_rank`` (the rank of a method that always has one, e.g. kf's 1, else
  None); ``takes_truncation`` (a truncation length T, shown in the label); ``stochastic``.
  """

  name = ""
  takes_rank = False
  fixed_rank: int | None = None
  rank_hint = ""
  takes_truncation = False
  stochastic = False

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
  def label(cls, rank=None, truncation=None) -> str:
    """The label of tables and legends: "ok (r=8)", "tbptt (T=25)", "kf".

    The rank is shown for a method that takes one, the truncation length for one that
    takes one; anything else given is ignored.
    """
    if cls.takes_rank and rank is not None:
      return f"{cls.name} (r={_integer(rank)})"
    if cls.takes_truncation and truncation is not None:
      return f"{cls.name} (T={_integer(truncation)})"
    return cls.name

  @classmethod
  def cost(cls, dims: Dims, rank: int | None = None, batch: int = 1,
           truncation: int | None = None, dtype="float32") -> Cost:
    """Flops and state bytes of one step for ``batch`` streams (see :class:`Cost`)."""
    raise NotImplementedError


def _in_xla() -> bool:
  """Whether the ops being built are compiled by XLA (``tf.function(jit_compile=True)``)."""
  try:
    from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return (not tf.executing_eagerly()
          and control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _bytes(dtype) -> int:
  return tf.as_dtype(dtype).size


# ----------------------------------------------------------------------------- states


class RTRLState(NamedTuple):
  """Exact RTRL: G_t in full, its last two axes swapped, ``gt`` [B, S, k·n, a] with
  gt[b, s, p, i] = G_t[b, s, i, p] (the a entries that ĥ_t ⊗ D_t fills for one (s, p)
  are then contiguous)."""
  h: tf.Tensor
  gt: tf.Tensor


class KroneckerState(NamedTuple):
  """G'_t = c Σ_i u_i ⊗ A_i (c = 1, or 1/r for r-KF-RTRL-AVG): ``u`` [B, r, a],
  ``a`` [B, r, S, k·n]."""
  h: tf.Tensor
  u: tf.Tensor
  a: tf.Tensor


class OKState(NamedTuple):
  """OK's state: G'_t = Σ_i u_i ⊗ A_i as in :class:`KroneckerState`, and the diagnostics
  of the last reduction, ``kept`` [B] (singular values kept exactly by Opt) and
  ``variance`` [B] (the step variance (★), docs/algorithms.md §4.3)."""
  h: tf.Tensor
  u: tf.Tensor
  a: tf.Tensor
  kept: tf.Tensor
  variance: tf.Tensor


class UOROState(NamedTuple):
  """UORO: G'_t = s̃ ⊗ θ̃, ``s`` [B, S], ``theta`` [B, a, k·n]."""
  h: tf.Tensor
  s: tf.Tensor
  theta: tf.Tensor


class SnAp1State(NamedTuple):
  """SnAp-1: the entries of G_t that ĥ_t ⊗ D_t can fill, ``j`` [B, a, k, S] with
  j[b, i, g, s] = G[b, s, i, g·n + unit(s)] (docs/algorithms.md §9)."""
  h: tf.Tensor
  j: tf.Tensor


# ----------------------------------------------------------------------------- estimators


class Estimator(Method):
  """Base class: the cell, the shapes and the shared pieces of the protocol.

  A subclass implements ``init``, ``step``, ``per_example_gradient`` and ``influence``
  (and ``cost``); ``gradient`` defaults to the batch mean of ``per_example_gradient``
  and ``reset`` zeroes every field of the masked rows.
  """

  name = "base"
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


class RTRL(Estimator):
  """Exact RTRL (O(S²·a·k·n) per step): G_t = H_t G_{t−1} + ĥ_t ⊗ D_t.

  H_t G_{t−1} is one [S, S]·[S, k·n·a] matmul per stream (G in the layout of
  :class:`RTRLState`).  The immediate term ĥ_t ⊗ D_t is non-zero only in the S·k rows
  (s, g·n + unit(s)) of that layout, each a copy of ĥ_t scaled by d_t[s, g]: it is added
  to those rows alone, in place in the product's buffer (``InplaceAdd``), never formed
  as a dense [S, a, k·n] tensor.
  """

  name = "rtrl"
  stochastic = False

  def __init__(self, cell):
    super().__init__(cell)
    n, k = self.units, self.columns // self.units
    s, g = np.meshgrid(np.arange(self.state_size), np.arange(k), indexing="ij")
    # the rows (s, g·n + unit(s)) of one stream's [S·k·n, a] view, in the order of d_t
    self._immediate_rows = (s * self.columns + g * n + s % n).reshape(-1).astype(np.int32)

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """H_t G: 2 S²·a·k·n flops; state s_t and G_t."""
    cls.rank_for(rank)
    s, entries = dims.state, dims.state * dims.hhat * dims.columns
    return Cost(2.0 * batch * s * entries, batch * (s + entries) * _bytes(dtype))

  def init(self, batch_size):
    return RTRLState(self._zeros(batch_size, self.state_size),
                     self._zeros(batch_size, self.state_size, self.columns, self.hhat_size))

  def step(self, state, x, rng=None):
    st = self._linearize(state, x)
    carried = tf.matmul(st.jacobian, self._flat(state))                # [B, S, k·n·a]
    rows = self._rows(carried.shape[0] or tf.shape(carried)[0])
    immediate = tf.reshape(st.gates[:, :, :, None] * st.hhat[:, None, None, :],
                           [-1, self.hhat_size])                       # d_t[b, s, g] ĥ_t[b]
    flat = tf.reshape(carried, [-1, self.hhat_size])
    if _in_xla():     # XLA has no InplaceAdd; its scatter updates in place
      gt = tf.tensor_scatter_nd_add(flat, rows[:, None], immediate)
    else:             # TF's scatter would copy the product: InplaceAdd writes into its
      # input's buffer, and ``carried`` is this step's own product, read by nothing else,
      # so only the S·k rows are touched (no copy, no dense term)
      gt = tf.raw_ops.InplaceAdd(x=flat, i=rows, v=immediate)
    return RTRLState(st.state, tf.reshape(gt, tf.shape(state.gt)))

  def _rows(self, batch):
    """The rows (b, s, g·n + unit(s)) of the [B·S·k·n, a] view, b-major (a constant when
    B is static)."""
    offsets = self.state_size * self.columns
    if isinstance(batch, int):
      return tf.constant((np.arange(batch)[:, None] * offsets
                          + self._immediate_rows[None]).reshape(-1), tf.int32)
    return tf.reshape(tf.range(batch)[:, None] * offsets + self._immediate_rows[None], [-1])

  def _flat(self, state):
    """G as [B, S, k·n·a]."""
    return tf.reshape(state.gt, [-1, self.state_size, self.columns * self.hhat_size])

  def per_example_gradient(self, state, dl_ds):
    rows = tf.matmul(tf.cast(dl_ds, self.dtype)[:, None, :], self._flat(state))
    return tf.transpose(tf.reshape(rows, [-1, self.columns, self.hhat_size]), [0, 2, 1])

  def influence(self, state):
    return tf.transpose(state.gt, [0, 1, 3, 2])

  def gradient(self, state, dl_ds):
    dl_ds = tf.cast(dl_ds, self.dtype)
    batch = tf.cast(tf.shape(dl_ds)[0], self.dtype)
    rows = tf.matmul(dl_ds[:, None, :], self._flat(state))                # [B, 1, k·n·a]
    grad = tf.reduce_sum(rows, axis=[0, 1]) / batch
    return [tf.transpose(tf.reshape(grad, [self.columns, self.hhat_size]))]


class KroneckerSum(Estimator):
  """Shared parts of the Kronecker-sum estimators: G'_t = c Σ_{i≤r} u_i ⊗ A_i with c = 1
  (c = 1/r for r-KF-RTRL-AVG, whose r terms are replicas), state :class:`KroneckerState`."""

  takes_rank = True

  def __init__(self, cell, rank: int | None = None):
    super().__init__(cell)
    self.rank = self.rank_for(rank)

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """H_t A_i: 2r·S·P flops (P = S·k·n); the gradient 2r(P + a·k·n); state r(a + P) + S."""
    r = cls.rank_for(rank)
    s, a, cols = dims.state, dims.hhat, dims.columns
    p = s * cols
    flops = 2.0 * r * s * p + 2.0 * r * (p + a * cols)
    return Cost(batch * flops, batch * (s + r * (a + p)) * _bytes(dtype))

  def init(self, batch_size):
    return KroneckerState(
        self._zeros(batch_size, self.state_size),
        self._zeros(batch_size, self.rank, self.hhat_size),
        self._zeros(batch_size, self.rank, self.state_size, self.columns))

  @staticmethod
  def propagate(jacobian, a):
    """H_t A_i for all i, ``[B, r, S, k·n]`` from H_t ``[B, S, S]`` and A ``[B, r, S, k·n]``:
    the dominant product of every Kronecker sum, a broadcast batched matmul (≈3× faster
    than the einsum on CPU)."""
    return tf.matmul(jacobian[:, None], a)

  def _families(self, state, x):
    """The r+1 terms H_t G'_{t−1} + ĥ_t ⊗ D_t: (cell step, H A [B,r,S·kn], D [B,S·kn])."""
    st = self._linearize(state, x)
    ha = self.propagate(st.jacobian, state.a)
    flat = self.state_size * self.columns
    d = tf.reshape(self.cell.dense_d(st.gates), [-1, flat])
    return st, tf.reshape(ha, [-1, self.rank, flat]), d

  def _unflatten(self, a):
    return tf.reshape(a, [-1, self.rank, self.state_size, self.columns])

  def per_example_gradient(self, state, dl_ds):
    """c Σ_i u_iᵀ ((∂L_t/∂s_t) A_i) per stream."""
    right = tf.einsum("bs,brsp->brp", tf.cast(dl_ds, self.dtype), state.a)
    return tf.einsum("bra,brp->bap", state.u, right) / self._replicas()

  def influence(self, state):
    return tf.einsum("bra,brsp->bsap", state.u, state.a) / self._replicas()

  def gradient(self, state, dl_ds):
    """dL_t/dW ≈ c Σ_i u_iᵀ ((∂L_t/∂s_t) A_i), averaged over the batch."""
    dl_ds = tf.cast(dl_ds, self.dtype)
    batch = tf.cast(tf.shape(dl_ds)[0], self.dtype)
    # (∂L/∂s) A_i for all i, then Σ_{b,i} u_bi ⊗ (…): two matmuls (einsum is slower here)
    right = tf.matmul(dl_ds[:, None, None, :], state.a)[:, :, 0, :]             # [B, r, P]
    u = tf.reshape(state.u, [-1, self.hhat_size])
    grad = tf.matmul(u, tf.reshape(right, [-1, self.columns]), transpose_a=True)
    return [grad / (batch * self._replicas())]

  def _replicas(self):
    """1/c: how many replicas the r terms average (1 but for r-KF-RTRL-AVG)."""
    return 1.0


class OK(KroneckerSum):
  """Optimal Kronecker-sum approximation with r terms (docs/algorithms.md §4).

  Each step forms the r+1 terms Σ_i u_i ⊗ (H_t A_i) + ĥ_t ⊗ D_t and reduces them
  to r with :func:`ok_tf.kronecker.ok_reduce`, the minimum-variance unbiased choice
  (computed by :func:`ok_tf.kronecker.ok_reduce_structured`, which keeps D_t sparse).
  The state is :class:`OKState`: the reduction's diagnostics ride along.  The stages of
  :meth:`step` are public (:meth:`linearize`, :meth:`propagate`, :meth:`reduce`), so that
  analysis/benchmark.py times them as the step runs them.
  """

  name = "ok"

  def __init__(self, cell, rank: int, balance: bool = True):
    super().__init__(cell, rank)
    self.balance = balance

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """As the Kronecker sums, plus 4q²(P + a) for the Gram matrices and the new factors
    (q = r + 1), and the diagnostics (an int32 and a float per stream) in the state."""
    base = super().cost(dims, rank, batch, truncation, dtype)
    q = cls.rank_for(rank) + 1
    extra = 4.0 * q * q * (dims.state * dims.columns + dims.hhat)
    return Cost(base.flops + batch * extra, base.state_bytes + batch * (4 + _bytes(dtype)))

  def init(self, batch_size):
    base = super().init(batch_size)
    return OKState(base.h, base.u, base.a, tf.zeros([batch_size], tf.int32),
                   self._zeros(batch_size))

  def step(self, state, x, rng):
    """:meth:`linearize`, :meth:`propagate` (H_t A_i), :meth:`reduce` to r terms."""
    st, last = self.linearize(state, x)
    red = self.reduce(state.u, st.hhat, self.propagate(st.jacobian, state.a), last, rng)
    return OKState(st.state, red.left, red.right, red.kept, red.variance)

  def linearize(self, state, x):
    """The first stage of :meth:`step`: the cell's step from s_{t−1} = ``state.h``
    (:class:`ok_tf.cells.CellStep`: s_t, ĥ_t, d_t, H_t) and D_t as
    :class:`ok_tf.kronecker.Diagonals` (``cell.d_diagonals``)."""
    st = self._linearize(state, x)
    return st, self.cell.d_diagonals(st.gates)

  def reduce(self, u, hhat, ha, last, rng) -> kronecker.Reduction:
    """The last stage of :meth:`step`: the r+1 terms Σ_i u_i ⊗ (H_t A_i) + ĥ_t ⊗ D_t
    (``u`` [B, r, a], ``hhat`` [B, a], ``ha`` [B, r, S, k·n], ``last`` D_t's
    :class:`~ok_tf.kronecker.Diagonals`) reduced to r by
    :func:`ok_tf.kronecker.ok_reduce_structured`."""
    left = tf.concat([u, hhat[:, None, :]], axis=1)
    return kronecker.ok_reduce_structured(left, ha, last, self.rank, rng,
                                          balance=self.balance)


class KFAvg(KroneckerSum):
  """r-KF-RTRL-AVG: r independent KF-RTRL estimators, averaged (same memory as OK(r))."""

  name = "kf_avg"

  def step(self, state, x, rng):
    st, ha, d = self._families(state, x)
    u, a = kronecker.kf_reduce(state.u, ha, st.hhat, d, rng)
    return KroneckerState(st.state, u, self._unflatten(a))

  def _replicas(self):
    return float(self.rank)


class KF(KFAvg):
  """KF-RTRL (Mujika et al. 2018): one Kronecker term u ⊗ A."""

  name = "kf"
  takes_rank = False
  fixed_rank = 1
  rank_hint = "use kf_avg for r averaged replicas"


class UORO(Estimator):
  """Unbiased Online Recurrent Optimisation (Tallec & Ollivier 2017).

      ρ_0 = √(‖θ̃‖ / ‖H_t s̃‖),  ρ_1 = √(‖νᵀF_t‖ / ‖ν‖),  νᵀF_t = ĥ_tᵀ (νᵀ D_t)
      s̃ ← ρ_0 H_t s̃ + ρ_1 ν,   θ̃ ← θ̃/ρ_0 + ĥ_tᵀ(νᵀ D_t)/ρ_1
      dL_t/dW ≈ ((∂L_t/∂s_t)·s̃) θ̃

  ν ∈ {±1}^S uniform; ``eps`` guards zero norms (any positive ρ keeps it unbiased).
  """

  name = "uoro"

  def __init__(self, cell, eps: float = 1e-7):
    super().__init__(cell)
    self.eps = eps

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """H_t s̃ and the rank-one update of θ̃: 2(S² + 2a·k·n) flops; state 2S + a·k·n."""
    cls.rank_for(rank)
    s, ak = dims.state, dims.hhat * dims.columns
    return Cost(2.0 * batch * (s * s + 2 * ak), batch * (2 * s + ak) * _bytes(dtype))

  def init(self, batch_size):
    return UOROState(self._zeros(batch_size, self.state_size),
                     self._zeros(batch_size, self.state_size),
                     self._zeros(batch_size, self.hhat_size, self.columns))

  def step(self, state, x, rng):
    st = self._linearize(state, x)
    d = self.cell.dense_d(st.gates)
    nu = kronecker.random_signs(rng, tf.shape(state.s), self.dtype)
    hs = tf.matmul(st.jacobian, state.s[:, :, None])[:, :, 0]
    nu_d = tf.matmul(nu[:, None, :], d)[:, 0, :]
    eps = self.eps
    norm = lambda t, axes: tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes))
    rho0 = tf.sqrt((norm(state.theta, [1, 2]) + eps) / (norm(hs, [1]) + eps))
    nu_f_norm = norm(st.hhat, [1]) * norm(nu_d, [1])
    rho1 = tf.sqrt((nu_f_norm + eps) / (norm(nu, [1]) + eps))
    s = rho0[:, None] * hs + rho1[:, None] * nu
    theta = (state.theta / rho0[:, None, None]
             + st.hhat[:, :, None] * nu_d[:, None, :] / rho1[:, None, None])
    return UOROState(st.state, s, theta)

  def per_example_gradient(self, state, dl_ds):
    coeff = tf.reduce_sum(tf.cast(dl_ds, self.dtype) * state.s, axis=-1)
    return coeff[:, None, None] * state.theta

  def influence(self, state):
    return tf.einsum("bs,bap->bsap", state.s, state.theta)

  def gradient(self, state, dl_ds):
    dl_ds = tf.cast(dl_ds, self.dtype)
    batch = tf.cast(tf.shape(dl_ds)[0], self.dtype)
    coeff = tf.reduce_sum(dl_ds * state.s, axis=-1)
    return [tf.tensordot(coeff, state.theta, axes=1) / batch]


class SnAp1(Estimator):
  """SnAp-1 (Menick et al. 2021; docs/algorithms.md §9): G'_t keeps only the entries
  through which W reaches a unit in one step, those of ĥ_t ⊗ D_t,

      J_t[i, g, s] = G'_t[s, i, g·n + unit(s)],
      J_t[i, g, s] = Σ_{s': unit(s') = unit(s)} H_t[s, s'] J_{t−1}[i, g, s'] + ĥ_t[i] d_t[s, g]
      dL_t/dW[i, g·n + j] ≈ Σ_{s: unit(s) = j} (∂L_t/∂s_t)[s] J_t[i, g, s]

  i.e. G'_t = P(H_t G'_{t−1} + ĥ_t ⊗ D_t) with P the projection onto that pattern.  With
  S = n (RHN, tanh) only diag(H_t) enters; for the LSTM the 2 × 2 block of H_t between
  unit j's (c_j, h_j).  O(S·a·k) per step; deterministic and biased (exact when H_t has
  no entries between different units, e.g. with zero recurrent weights).
  """

  name = "snap1"
  stochastic = False

  def __init__(self, cell):
    super().__init__(cell)
    self.blocks = self.state_size // self.units       # m: state coordinates per unit
    self.gates = self.columns // self.units           # k
    # unit_one_hot[s, j] = [unit(s) = j], unit(s) = s mod n
    self.unit_one_hot = tf.one_hot(tf.range(self.state_size) % self.units, self.units,
                                   dtype=self.dtype)

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """m multiply-adds by H_t's blocks and one for ĥ_t ⊗ d_t per kept entry, and one per
    entry for the gradient: 2(m + 2)·S·a·k flops (m = S/n); state S + S·a·k."""
    cls.rank_for(rank)
    m, k = dims.state // dims.units, dims.columns // dims.units
    kept = dims.state * dims.hhat * k
    return Cost(2.0 * batch * (m + 2) * kept, batch * (dims.state + kept) * _bytes(dtype))

  def init(self, batch_size):
    return SnAp1State(self._zeros(batch_size, self.state_size),
                      self._zeros(batch_size, self.hhat_size, self.gates, self.state_size))

  def step(self, state, x, rng=None):
    """J_t from H_t's unit blocks alone (``cell.linearize_blocks``: H_t is never formed),
    then :meth:`update`; analysis/estimator_steps.py times the two stages."""
    st = self.cell.linearize_blocks(x, state.h)
    return SnAp1State(st.state, self.update(state.j, st))

  #: A state of at least this many numbers is updated by one XLA-compiled pass
  #: (:func:`snap1_update` under ``jit_compile``); TensorFlow's own ops take three passes
  #: over it, with slow broadcasts, but below this size XLA's launch costs more.
  fuse_min_entries = 1 << 15

  def update(self, j, st: cells_lib.UnitStep):
    """J_t from J_{t−1} ``j`` [B, a, k, S] and the cell's :class:`~ok_tf.cells.UnitStep`
    (:func:`snap1_update`, fused by XLA for states of ``fuse_min_entries`` numbers or more)."""
    size = j.shape.num_elements()
    fused = size is not None and size >= self.fuse_min_entries
    return (_snap1_update_fused if fused else snap1_update)(j, st.blocks, st.hhat, st.gates)

  def per_example_gradient(self, state, dl_ds):
    weighted = state.j * tf.cast(dl_ds, self.dtype)[:, None, None, :]          # [B, a, k, S]
    per_unit = tf.reduce_sum(
        tf.reshape(weighted, [-1, self.hhat_size, self.gates, self.blocks, self.units]), axis=3)
    return tf.reshape(per_unit, [-1, self.hhat_size, self.columns])

  def influence(self, state):
    dense = state.j[..., None] * self.unit_one_hot                          # [B, a, k, S, n]
    return tf.reshape(tf.transpose(dense, [0, 3, 1, 2, 4]),
                      [-1, self.state_size, self.hhat_size, self.columns])


def snap1_update(j, blocks, hhat, gates):
  """SnAp-1's recursion, elementwise: J_t = (H_t's unit blocks) J_{t−1} + ĥ_t d_tᵀ,

      J_t[i, g, p·n + u] = Σ_q blocks[p, q, u] J_{t−1}[i, g, q·n + u] + ĥ_t[i] d_t[p·n + u, g]

  for J_{t−1} ``j`` [B, a, k, S], ``blocks`` [B, m, m, n] (:class:`ok_tf.cells.UnitStep`),
  ĥ_t ``hhat`` [B, a] and d_t ``gates`` [B, S, k]."""
  m, n = blocks.shape[1], blocks.shape[3]
  if m == 1:                                     # H_t's diagonal
    carried = j * blocks[:, None, 0]                               # [B, a, k, S] · [B, 1, 1, n]
  else:
    a, k = j.shape[1], j.shape[2]
    carried = tf.reshape(
        tf.reduce_sum(blocks[:, None, None] * tf.reshape(j, [-1, a, k, 1, m, n]), axis=4),
        tf.shape(j))
  return carried + hhat[:, :, None, None] * tf.transpose(gates, [0, 2, 1])[:, None]


_snap1_update_fused = tf.function(snap1_update, jit_compile=True)


class TBPTT(Method):
  """Truncated BPTT(T) (docs/algorithms.md §5): not an estimator (it has no G'_t;
  :class:`ok_tf.training.TBPTTTrainer` runs it), described here so that the method list,
  the labels and the cost models have one source."""

  name = "tbptt"
  takes_truncation = True

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """Forward 2a·k·n flops per step, backward about twice that; the states of a window
    (kept for the backward pass) and the carried state: (T + 1)·S."""
    cls.rank_for(rank)
    if truncation is None or int(truncation) < 1:
      raise ValueError(f"tbptt's cost needs the truncation length, got {truncation}")
    return Cost(6.0 * batch * dims.hhat * dims.columns,
                batch * (int(truncation) + 1) * dims.state * _bytes(dtype))


# ----------------------------------------------------------------------------- sequences


class SequenceResult(NamedTuple):
  """What :func:`run_sequence` returns.

  Attributes:
    state: the estimator's state after the last step.
    grads: Σ_t ĝ_t, the estimate of d(Σ_t L_t)/dW with L_t = mean_b L_{t,b}; a list
      matching ``cell.trainable_variables``.
    readout_grads: Σ_t ∂L_t/∂v for each v of ``variables`` (exact), a list.
    losses: ``[T, B]``, L_{t,b}.
  """
  state: object
  grads: list
  readout_grads: list
  losses: tf.Tensor


def run_sequence(est: Estimator, state, inputs, loss_fn, targets=None, rng=None,
                 variables=()) -> SequenceResult:
  """Runs ``est`` over a sequence in one compiled loop and sums its gradient estimates.

  For t = 1..T, with each stream's loss L_{t,b} = ``loss_fn(s_t, target_t)[b]``::

      state = est.step(state, inputs[t], rng)                 s_t = state.h
      ∂L_{t,b}/∂s_t of every stream, and ∂L_t/∂v, from one tape through loss_fn
      ĝ_t = est.gradient(state, ∂L_t/∂s)

  Args:
    est: an estimator (:func:`get`).
    state: its state before the first step (``est.init(B)``, or a previous result's).
    inputs: x_1..x_T, ``[T, B, input_dim]``.
    loss_fn: ``(s_t [B, S], target_t) -> [B]`` per-stream losses, differentiable in s_t
      (e.g. a readout of ``cell.output(s_t)`` and a cross-entropy); L_{t,b} must depend
      on stream b's state alone.
    targets: a tensor (or nest of tensors) with T leading; ``target_t`` is its slice at t
      (None: ``loss_fn`` gets None).
    rng: a ``tf.random.Generator`` (needed by the stochastic estimators).
    variables: variables of ``loss_fn`` (a readout's weights) whose exact gradients to sum.

  Returns:
    :class:`SequenceResult` (the final state, Σ_t ĝ_t, Σ_t ∂L_t/∂v, the losses [T, B]).

  The loop is one ``tf.function``: a call with the same ``est``, ``loss_fn``, ``rng``
  and shapes reuses the compiled loop (pass the same ``loss_fn`` object, not a new
  lambda per call); inside another ``tf.function`` it becomes part of that graph.  With
  exact RTRL, ``grads`` is the gradient of Σ_t L_t that BPTT over the sequence gives.
  """
  if est.stochastic and rng is None:
    raise ValueError(f"{est.name} draws random numbers: pass rng=tf.random.Generator"
                     ".from_seed(0) (or any generator)")
  # A bound method is a new object at every attribute access (and would be traced anew
  # at every call): the compiled loop is keyed on its function and its object instead.
  if inspect.ismethod(loss_fn):
    loss_fn = (loss_fn.__func__, loss_fn.__self__)
  return _sequence_loop(est, state, tf.convert_to_tensor(inputs), loss_fn, targets, rng,
                        tuple(variables))


@tf.function
def _sequence_loop(est, state, inputs, loss_fn, targets, rng, variables) -> SequenceResult:
  """:func:`run_sequence`'s compiled loop (``loss_fn`` a callable or (function, self))."""
  if isinstance(loss_fn, tuple):
    loss_fn = functools.partial(*loss_fn)
  variables = list(variables)
  grads = [tf.zeros(v.shape, est.dtype) for v in est.cell.trainable_variables]
  readout_grads = [tf.zeros(v.shape, v.dtype) for v in variables]
  losses = tf.TensorArray(est.dtype, size=tf.shape(inputs)[0])
  for t in tf.range(tf.shape(inputs)[0]):
    state = est.step(state, inputs[t], rng)
    target = None if targets is None else tf.nest.map_structure(lambda y: y[t], targets)
    with tf.GradientTape() as tape:
      tape.watch(state.h)
      loss = tf.cast(loss_fn(state.h, target), est.dtype)
      total = tf.reduce_sum(loss)
    dl_ds, *var_grads = tape.gradient(total, [state.h] + variables,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
    batch = tf.cast(tf.shape(loss)[0], est.dtype)
    grads = [g + e for g, e in zip(grads, est.gradient(state, dl_ds))]
    readout_grads = [g + tf.cast(tf.convert_to_tensor(v), g.dtype) / tf.cast(batch, g.dtype)
                     for g, v in zip(readout_grads, var_grads)]
    losses = losses.write(t, loss)
  return SequenceResult(state, grads, readout_grads, losses.stack())


# ----------------------------------------------------------------------------- registry

# Every training method, in the order of tables and legends.
METHODS = {m.name: m for m in (OK, KFAvg, KF, UORO, SnAp1, RTRL, TBPTT)}
# The methods that are estimators (what ``get`` builds and the online trainer runs).
ESTIMATORS = {name: m for name, m in METHODS.items() if issubclass(m, Estimator)}


def method(name: str) -> type[Method]:
  """The :class:`Method` named ``name``; ValueError listing the names otherwise."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
  return METHODS[name]


def label(name: str, rank=None, truncation=None) -> str:
  """:meth:`Method.label` of the method ``name`` ("ok (r=8)"); an unknown name as is."""
  return METHODS[name].label(rank, truncation) if name in METHODS else str(name)


def order(name: str) -> int:
  """Position of ``name`` in :data:`METHODS` (unknown names after all the known ones)."""
  return list(METHODS).index(name) if name in METHODS else len(METHODS)


def get(name: str, cell: cells_lib.KroneckerCell, rank: int | None = None,
        **kwargs) -> Estimator:
  """An estimator by name.

  Args:
    name: a name of :data:`ESTIMATORS`.
    cell: a built :class:`ok_tf.cells.KroneckerCell`.
    rank: r for the methods that take one (``ok``, ``kf_avg``: required); ``kf`` accepts
      only 1; the others take none (:meth:`Method.rank_for`).
    **kwargs: passed to the estimator (``balance`` for ok, ``eps`` for uoro).
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
  cls = ESTIMATORS[name]
  rank = cls.rank_for(rank)
  if cls.takes_rank or cls.fixed_rank is not None:
    return cls(cell, rank, **kwargs)
  return cls(cell, **kwargs)
