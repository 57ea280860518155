"""Gradient estimators for online learning of recurrent networks, behind one protocol.

Every estimator tracks, per stream b of a batch, the recurrent state s_t and an
approximation of the influence matrix G_t = ds_t/dW (docs/algorithms.md §2):

    G_t = H_t G_{t−1} + ĥ_t ⊗ D_t,      G_0 = 0
    dL_t/dW = (∂L_t/∂s_t) G_t

The protocol (all methods pure in the state, so they can live in ``tf.function`` loops)::

    est = ok_tf.estimators.get(name, cell, rank=r)   # "rtrl", "ok", "kf", "kf_avg", "uoro"
    state = est.init(batch_size)          # zero recurrent and approximation state
    state = est.step(state, x, rng)       # one time step, x: [B, input_dim]
    state.h                               # s_t, [B, state_size]
    grads = est.gradient(state, dl_dh)    # list matching cell.trainable_variables: the
                                          # batch mean of the per-stream dL_t/dW estimates
    state = est.reset(state, mask)        # zero state and approximation where mask [B]

States are ``NamedTuple`` s of tensors whose fields all have the batch as leading axis.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ok_tf import cells as cells_lib
from ok_tf import kronecker


class RTRLState(NamedTuple):
  """Exact RTRL: G_t in full, ``g`` of shape [B, S, a, k·n]."""
  h: tf.Tensor
  g: tf.Tensor


class KroneckerState(NamedTuple):
  """G'_t = Σ_i u_i ⊗ A_i: ``u`` [B, r, a], ``a`` [B, r, S, k·n].

  For OK, ``kept`` [B] (singular values kept exactly by Opt at the last step) and
  ``variance`` [B] (the step variance (★) of the last reduction) are diagnostics.
  """
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


class Estimator:
  """Base class: the cell, the shapes and the shared pieces of the protocol."""

  name = "base"
  stochastic = True

  def __init__(self, cell: cells_lib.KroneckerCell):
    if not cell.built:
      raise ValueError("build the cell first: cell.build(input_dim)")
    self.cell = cell
    self.dtype = tf.as_dtype(cell.compute_dtype)
    self.state_size = cell.state_size
    self.hhat_size = cell.hhat_size
    self.columns = cell.kernel_columns

  def init(self, batch_size: int):
    raise NotImplementedError

  def step(self, state, x, rng: tf.random.Generator):
    raise NotImplementedError

  def gradient(self, state, dl_dh) -> list:
    raise NotImplementedError

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
  """Exact RTRL (O(S²·a·k·n) per step): G_t = H_t G_{t−1} + ĥ_t ⊗ D_t."""

  name = "rtrl"
  stochastic = False

  def init(self, batch_size):
    return RTRLState(self._zeros(batch_size, self.state_size),
                     self._zeros(batch_size, self.state_size, self.hhat_size, self.columns))

  def step(self, state, x, rng=None):
    st = self._linearize(state, x)
    d = self.cell.dense_d(st.gates)
    flat = tf.reshape(state.g, [-1, self.state_size, self.hhat_size * self.columns])
    g = tf.reshape(tf.matmul(st.jacobian, flat), tf.shape(state.g))
    g += st.hhat[:, None, :, None] * d[:, :, None, :]
    return RTRLState(st.state, g)

  def gradient(self, state, dl_dh):
    dl_dh = tf.cast(dl_dh, self.dtype)
    batch = tf.cast(tf.shape(dl_dh)[0], self.dtype)
    flat = tf.reshape(state.g, [-1, self.state_size, self.hhat_size * self.columns])
    grad = tf.reduce_sum(tf.matmul(dl_dh[:, None, :], flat), axis=[0, 1]) / batch
    return [tf.reshape(grad, [self.hhat_size, self.columns])]


class _KroneckerSum(Estimator):
  """Shared parts of the Kronecker-sum estimators (state Σ_i u_i ⊗ A_i)."""

  def __init__(self, cell, rank: int):
    super().__init__(cell)
    if int(rank) < 1:
      raise ValueError(f"rank must be a positive integer, got {rank!r}")
    self.rank = int(rank)

  def init(self, batch_size):
    return KroneckerState(
        self._zeros(batch_size, self.state_size),
        self._zeros(batch_size, self.rank, self.hhat_size),
        self._zeros(batch_size, self.rank, self.state_size, self.columns),
        tf.zeros([batch_size], tf.int32),
        self._zeros(batch_size))

  def _families(self, state, x):
    """The r+1 terms H_t G'_{t−1} + ĥ_t ⊗ D_t: (cell step, H A [B,r,S·kn], D [B,S·kn])."""
    st = self._linearize(state, x)
    # H_t A_i for all i: a broadcast batched matmul (≈3× faster than the einsum on CPU).
    ha = tf.matmul(st.jacobian[:, None], state.a)
    flat = self.state_size * self.columns
    d = tf.reshape(self.cell.dense_d(st.gates), [-1, flat])
    return st, tf.reshape(ha, [-1, self.rank, flat]), d

  def _unflatten(self, a):
    return tf.reshape(a, [-1, self.rank, self.state_size, self.columns])

  def gradient(self, state, dl_dh):
    """dL_t/dW ≈ Σ_i u_iᵀ ((∂L_t/∂s_t) A_i), averaged over the batch (and replicas)."""
    dl_dh = tf.cast(dl_dh, self.dtype)
    batch = tf.cast(tf.shape(dl_dh)[0], self.dtype)
    # (∂L/∂s) A_i for all i, then Σ_{b,i} u_bi ⊗ (…): two matmuls (einsum is slower here)
    right = tf.matmul(dl_dh[:, None, None, :], state.a)[:, :, 0, :]             # [B, r, P]
    u = tf.reshape(state.u, [-1, self.hhat_size])
    grad = tf.matmul(u, tf.reshape(right, [-1, self.columns]), transpose_a=True)
    return [grad / (batch * self._replicas())]

  def _replicas(self):
    return 1.0


class OK(_KroneckerSum):
  """Optimal Kronecker-sum approximation with r terms (docs/algorithms.md §4).

  Each step forms the r+1 terms Σ_i u_i ⊗ (H_t A_i) + ĥ_t ⊗ D_t and reduces them
  to r with :func:`ok_tf.kronecker.ok_reduce`, the minimum-variance unbiased choice
  (computed by :func:`ok_tf.kronecker.ok_reduce_structured`, which keeps D_t sparse).
  """

  name = "ok"

  def __init__(self, cell, rank: int, balance: bool = True):
    super().__init__(cell, rank)
    self.balance = balance

  def step(self, state, x, rng):
    st = self._linearize(state, x)
    ha = tf.matmul(st.jacobian[:, None], state.a)                 # H_t A_i, [B, r, S, k·n]
    left = tf.concat([state.u, st.hhat[:, None, :]], axis=1)
    red = kronecker.ok_reduce_structured(left, ha, self.cell.d_diagonals(st.gates), self.rank,
                                         rng, balance=self.balance)
    return KroneckerState(st.state, red.left, red.right, red.kept, red.variance)


class KFAvg(_KroneckerSum):
  """r-KF-RTRL-AVG: r independent KF-RTRL estimators, averaged (same memory as OK(r))."""

  name = "kf_avg"

  def step(self, state, x, rng):
    st, ha, d = self._families(state, x)
    u, a = kronecker.kf_reduce(state.u, ha, st.hhat, d, rng)
    return KroneckerState(st.state, u, self._unflatten(a), state.kept, state.variance)

  def _replicas(self):
    return float(self.rank)


class KF(KFAvg):
  """KF-RTRL (Mujika et al. 2018): one Kronecker term u ⊗ A."""

  name = "kf"

  def __init__(self, cell, rank: int = 1):
    if rank != 1:
      raise ValueError(f"kf has rank 1 (got rank={rank}); use kf_avg for r replicas")
    super().__init__(cell, 1)


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

  def gradient(self, state, dl_dh):
    dl_dh = tf.cast(dl_dh, self.dtype)
    batch = tf.cast(tf.shape(dl_dh)[0], self.dtype)
    coeff = tf.reduce_sum(dl_dh * state.s, axis=-1)
    return [tf.tensordot(coeff, state.theta, axes=1) / batch]


ESTIMATORS = {"rtrl": RTRL, "ok": OK, "kf": KF, "kf_avg": KFAvg, "uoro": UORO}
RANKED = ("ok", "kf_avg")


def get(name: str, cell: cells_lib.KroneckerCell, rank: int | None = None,
        **kwargs) -> Estimator:
  """An estimator by name.

  Args:
    name: ``"rtrl"``, ``"ok"``, ``"kf"``, ``"kf_avg"`` or ``"uoro"``.
    cell: a built :class:`ok_tf.cells.KroneckerCell`.
    rank: r for ``ok`` and ``kf_avg`` (required there); ``kf`` accepts only 1; the
      others take none.
    **kwargs: passed to the estimator (``balance`` for ok, ``eps`` for uoro).
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
  cls = ESTIMATORS[name]
  if name in RANKED:
    if rank is None:
      raise ValueError(f"{name} needs a rank (rank=r, r ≥ 1)")
    return cls(cell, rank, **kwargs)
  if name == "kf":
    return cls(cell, 1 if rank is None else rank, **kwargs)
  if rank is not None:
    raise ValueError(f"{name} takes no rank (got rank={rank})")
  return cls(cell, **kwargs)
