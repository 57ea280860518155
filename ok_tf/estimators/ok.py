"""OK: the optimal Kronecker-sum approximation with r terms (docs/algorithms.md §4)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ok_tf import kronecker
from ok_tf.hyperparameters import Hyperparameter
from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import dtype_bytes
from ok_tf.estimators.kronecker_sum import KroneckerSum


class OKState(NamedTuple):
  """OK's state: G'_t = Σ_i u_i ⊗ A_i as in :class:`KroneckerState`, and the diagnostics
  of the last reduction, ``kept`` [B] (singular values kept exactly by Opt) and
  ``variance`` [B] (the step variance (★), docs/algorithms.md §4.3)."""
  h: tf.Tensor
  u: tf.Tensor
  a: tf.Tensor
  kept: tf.Tensor
  variance: tf.Tensor


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
  order = 0
  has_stages = True
  hyperparameters = (
      Hyperparameter("balance", bool, True,
                     "Rescale each new Kronecker pair u_i ⊗ A_i to equal norms (the product "
                     "is unchanged; keeps the factors' scales from drifting)."),)

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
    return Cost(base.flops + batch * extra, base.state_bytes + batch * (4 + dtype_bytes(dtype)))

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

  def diagnostics(self, state: OKState) -> dict:
    """OK's choice at its last step, per stream (all ``[B]``), from its state after it:
    ``kept`` m, the singular values of C kept exactly; ``variance`` (★) = s_m²/k −
    Σ_{i>m} σ_i²; ``c_norm_sq`` ‖C‖²_F = Σ σ_i²; ``mixed_share`` s_m / Σ σ_i (0 when
    C = 0).

    Opt puts the m kept triples first, as pairs with ‖u_j‖·‖A_j‖ = σ_j, and the k = r − m
    mixed ones after them, each with ‖u_j‖·‖A_j‖ = s_m/k (the mixed columns are unit
    vectors in the orthonormal bases, scaled by √(s_m/k); rescaling a pair keeps the
    product).  Hence Σσ = Σ_j ‖u_j‖‖A_j‖, s_m = Σ_{j>m} ‖u_j‖‖A_j‖ and, with the step
    variance (★) in the state, Σ_{i>m} σ_i² = s_m²/k − ★.  No second SVD is needed.
    """
    dtype = state.variance.dtype
    rank = state.u.shape[1]
    products = tf.norm(state.u, axis=-1) * tf.norm(
        tf.reshape(state.a, tf.concat([tf.shape(state.a)[:2], [-1]], 0)), axis=-1)
    mixed = tf.range(rank)[None, :] >= state.kept[:, None]
    tail = tf.reduce_sum(tf.where(mixed, products, 0.0), axis=-1)
    total = tf.reduce_sum(products, axis=-1)
    kept_sq = tf.reduce_sum(tf.where(mixed, tf.zeros_like(products), tf.square(products)),
                            axis=-1)
    k = tf.cast(rank - state.kept, dtype)
    c_norm_sq = kept_sq + tf.maximum(tf.square(tail) / k - state.variance, 0.0)
    share = tf.where(total > 0.0, tail / tf.where(total > 0.0, total, 1.0), 0.0)
    return {"kept": state.kept, "variance": state.variance, "c_norm_sq": c_norm_sq,
            "mixed_share": share}
