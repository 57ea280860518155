"""Pure, batched functions on Kronecker sums (docs/algorithms.md §3–§5).

A Kronecker sum ``G = Σ_i u_i ⊗ A_i`` is stored as its two factor families, the left
vectors ``u`` (``[B, q, a]``) and the right matrices flattened to vectors ``A``
(``[B, q, m]``).  Everything is batched over the leading axis B: no Python loop over
the batch, the rank or the units, and no host round trip, so these functions can live
inside compiled ``tf.function`` loops.

Functions:

* :func:`opt`          Opt(C, r): minimum-variance unbiased rank-r approximation of C.
* :func:`opt_variance` the variance (★) that Opt attains.
* :func:`orthonormalize` an orthonormal basis of a family through its Gram matrix
  (:func:`orthonormalize_gram` from the Gram matrix alone).
* :func:`ok_reduce`    OK: the optimal unbiased reduction from r+1 to r Kronecker terms.
* :func:`ok_reduce_structured` the same reduction when the last right factor is a sparse
  :class:`Diagonals` matrix (D_t): no concatenation, the Gram matrix blockwise.
* :class:`Diagonals`   batched matrices given by a few of their diagonals, with
  :func:`diagonals_inner`, :func:`diagonals_sq_norm`, :func:`add_diagonals`,
  :func:`diagonals_dense`, and the two halves of the structured reduction,
  :func:`gram_with_diagonals` and :func:`mix_with_diagonals`.
* :func:`kf_reduce`    KF-RTRL's reduction from 2 terms to 1 (vectorised over replicas).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


def _tolerance(dtype) -> float:
  """Relative tolerance for ties between singular values (docs/algorithms.md §7)."""
  return max(1e-12, 100.0 * float(np.finfo(dtype.as_numpy_dtype).eps))


def random_signs(rng: tf.random.Generator, shape, dtype) -> tf.Tensor:
  """Independent uniform ±1 entries of the given shape."""
  bits = rng.uniform(shape, minval=0, maxval=2, dtype=tf.int32)
  return tf.cast(2 * bits - 1, dtype)


class _Split(NamedTuple):
  """The choice of Opt: which singular triples are kept and how the rest are mixed."""
  sigma: tf.Tensor      # [B, q] singular values, descending
  kept: tf.Tensor       # [B] int32, m: the number of triples kept exactly
  tail: tf.Tensor       # [B] s_m = Σ_{i>m} σ_i
  mixed_terms: tf.Tensor  # [B] k = r − m


def _split(sigma: tf.Tensor, rank: int) -> _Split:
  """Smallest m ∈ {0..r−1} with (r − m) σ_{m+1} ≤ s_m (1 + tol), and s_m, k."""
  dtype = sigma.dtype
  sigma = tf.where(sigma > _tolerance(dtype) * sigma[:, :1], sigma, tf.zeros_like(sigma))
  # tails[j] = Σ_{i ≥ j} σ_i (0-based), j = 0..q-1
  tails = tf.cumsum(sigma, axis=-1, reverse=True)
  j = tf.range(rank, dtype=dtype)
  cond = (float(rank) - j) * sigma[:, :rank] <= tails[:, :rank] * (1.0 + _tolerance(dtype))
  # m = first j where cond holds; cond[r-1] holds always (σ_r ≤ σ_r + σ_{r+1}).
  cond = tf.concat([cond[:, :rank - 1], tf.ones_like(cond[:, :1])], axis=-1)
  kept = tf.argmax(tf.cast(cond, tf.int32), axis=-1, output_type=tf.int32)
  tail = tf.gather(tails, kept, axis=1, batch_dims=1)
  return _Split(sigma, kept, tail, rank - kept)


def _variance(split: _Split, rank: int) -> tf.Tensor:
  """(★) from the singular values and the split: s_m² / k − Σ_{i>m} σ_i²."""
  mixed = tf.range(rank + 1)[None, :] >= split.kept[:, None]
  tail_sq = tf.reduce_sum(tf.where(mixed, tf.square(split.sigma), 0.0), axis=-1)
  k = tf.cast(split.mixed_terms, split.sigma.dtype)
  return tf.maximum(tf.square(split.tail) / k - tail_sq, 0.0)


def opt_variance(c: tf.Tensor, rank: int) -> tf.Tensor:
  """Variance of Opt(C, r):  E‖L Rᵀ − C‖²_F = s_m² / k − Σ_{i>m} σ_i²   (★).

  Args:
    c: ``[B, q, q]`` with q = rank + 1.
    rank: r.

  Returns:
    ``[B]`` the minimum variance of an unbiased rank-r approximation of each C.
  """
  return _variance(_split(tf.linalg.svd(c, compute_uv=False), rank), rank)


def opt(c: tf.Tensor, rank: int, rng: tf.random.Generator, return_kept: bool = False,
        return_variance: bool = False):
  """Opt(C, r): the minimum-variance unbiased rank-r approximation of C.

  With the SVD C = U diag(σ) Vᵀ (σ descending), m the smallest index in {0..r−1} with
  (r − m) σ_{m+1} ≤ s_m = Σ_{i>m} σ_i, and k = r − m:

      L_{:,i} = √σ_i U_{:,i},  R_{:,i} = √σ_i V_{:,i}                  i ≤ m (kept)
      L_{:,m+j} = √(s_m/k) U Ξ z_j,  R_{:,m+j} = √(s_m/k) V Ξ z_j,    j = 1..k (mixed)

  where p_i = k σ_i / s_m, w = (√(1 − p_i))_{i>m} is a unit vector, {w, z_1..z_k} an
  orthonormal basis of the mixed coordinates (so Z Zᵀ = I − w wᵀ has diagonal p) and
  Ξ = diag(ξ), ξ uniform random signs.  Then E[L Rᵀ] = C and E‖L Rᵀ − C‖² is (★).

  Batched over examples with different m: everything works in the full q-dimensional
  space with w zero on the kept coordinates; w is completed to a basis with the
  Householder reflection P = I − 2 v vᵀ/‖v‖², v = w + e_q (‖v‖² ≥ 2): P e_q = −w and
  P e_j (j < q) are orthonormal and orthogonal to w; for kept j, P e_j = e_j.

  Args:
    c: ``[B, q, q]``, q = rank + 1.
    rank: r ≥ 1.
    rng: a ``tf.random.Generator`` for the signs ξ.
    return_kept: also return m, ``[B]`` int32.
    return_variance: also return (★), ``[B]`` (no second SVD).

  Returns:
    (L, R), each ``[B, q, r]``, then m if ``return_kept``, then (★) if
    ``return_variance``.
  """
  dtype = c.dtype
  q = rank + 1
  sigma, u, v = tf.linalg.svd(c)                       # note the order: (s, u, v)
  split = _split(sigma, rank)
  idx = tf.range(q)[None, :]
  is_kept = idx < split.kept[:, None]                  # [B, q]
  k = tf.cast(split.mixed_terms, dtype)[:, None]       # [B, 1]
  tail = split.tail[:, None]
  positive = tail > 0.0
  # p_i = k σ_i / s_m on the mixed coordinates (uniform k/d when s_m = 0: scaled out).
  d = float(q) - tf.cast(split.kept, dtype)[:, None]
  p = tf.where(positive, k * split.sigma / tf.where(positive, tail, 1.0), k / d)
  # 1 − p_i within rounding of 0 (ties such as σ = (1, 1, 1, 0)) is exactly 0: p_i = 1.
  one_minus_p = tf.clip_by_value(1.0 - p, 0.0, 1.0)
  one_minus_p = tf.where(one_minus_p > _tolerance(dtype), one_minus_p, tf.zeros_like(p))
  w = tf.where(is_kept, tf.zeros_like(p), tf.sqrt(one_minus_p))
  w = w / tf.norm(w, axis=-1, keepdims=True)
  e_last = tf.one_hot(q - 1, q, dtype=dtype)[None, :]
  hv = w + e_last
  householder = tf.eye(q, dtype=dtype) - 2.0 * hv[:, :, None] * hv[:, None, :] / tf.reduce_sum(
      tf.square(hv), axis=-1)[:, None, None]
  basis = householder[:, :, :rank]                     # columns P e_j, j = 1..r
  signs = random_signs(rng, tf.shape(sigma), dtype)
  row_scale = tf.where(is_kept, tf.sqrt(split.sigma), signs)           # [B, q]
  col_scale = tf.where(is_kept[:, :rank], tf.ones_like(k),
                       tf.sqrt(tf.where(positive, tail, 0.0) / k))     # [B, r]
  mix = row_scale[:, :, None] * basis * col_scale[:, None, :]          # [B, q, r]
  left = tf.matmul(u, mix)
  right = tf.matmul(v, mix)
  out = (left, right)
  if return_kept:
    out += (split.kept,)
  if return_variance:
    out += (_variance(split, rank),)
  return out


class Basis(NamedTuple):
  """An orthonormal basis of a family of q vectors (rows of F, ``[B, q, dim]``).

  Q = T F has orthonormal (or zero) rows, and F = R Q up to rounding.
  """
  to_basis: tf.Tensor     # T, [B, q, q]
  coefficients: tf.Tensor  # R, [B, q, q]
  gram: tf.Tensor         # F Fᵀ, [B, q, q]: ‖Σ_i m_i F_i‖² = mᵀ (F Fᵀ) m without touching F


def orthonormalize(family: tf.Tensor) -> Basis:
  """Orthonormalise the rows of ``family`` ``[B, q, dim]`` through the q × q Gram matrix.

  With F Fᵀ = E Λ Eᵀ: Q = Λ^{−1/2} Eᵀ F and R = E Λ^{1/2}, keeping only eigenvalues
  above a relative cutoff (q·eps·λ_max), so zero and linearly dependent vectors give
  zero rows of Q and zero columns of R rather than NaN.  Dropping a direction is the
  only source of bias (R T = E_kept E_keptᵀ is an orthogonal projection), so the cutoff
  sits at the Gram matrix's rounding level: directions with σ_i/σ_max below
  √(q·eps) (≈1e-3 in float32, ≈5e-8 in float64) are lost.  A kept direction close to
  the cutoff may be imperfectly normalised, which costs a little variance, not bias.  This costs one
  ``[q, dim] × [dim, q]`` product instead of a tall QR and is the faster choice on CPU
  (docs/algorithms.md §4.4).

  A family with a non-finite entry (a diverged run) gives NaN in T instead of making
  ``eigh`` raise inside a compiled loop, so the NaN reaches the loss and is reported.
  """
  return orthonormalize_gram(tf.matmul(family, family, transpose_b=True))


def orthonormalize_gram(gram: tf.Tensor) -> Basis:
  """:func:`orthonormalize` from the Gram matrix F Fᵀ ``[B, q, q]`` alone (F never read).

  T = Λ^{−1/2} Eᵀ and R = E Λ^{1/2} with F Fᵀ = E Λ Eᵀ, eigenvalues below
  q·eps·λ_max dropped; the basis itself is Q = T F.
  """
  dtype = gram.dtype
  q = gram.shape[-1]
  finite = tf.reduce_all(tf.math.is_finite(gram), axis=[1, 2])[:, None, None]
  lam, vecs = tf.linalg.eigh(tf.where(finite, gram, 0.0))    # ascending
  lam_max = tf.reduce_max(lam, axis=-1, keepdims=True)
  cutoff = lam_max * (q * float(np.finfo(dtype.as_numpy_dtype).eps))
  keep = (lam > cutoff) & (lam > 0.0)
  safe = tf.where(keep, lam, 1.0)
  inv_sqrt = tf.where(keep, tf.math.rsqrt(safe), 0.0)
  sqrt = tf.where(keep, tf.sqrt(safe), 0.0)
  to_basis = inv_sqrt[:, :, None] * tf.linalg.matrix_transpose(vecs)
  to_basis = tf.where(finite, to_basis, tf.constant(float("nan"), dtype))
  coefficients = vecs * sqrt[:, None, :]
  return Basis(to_basis, coefficients, gram)


class Diagonals(NamedTuple):
  """Batched ``[B, rows, cols]`` matrices that are zero off a few diagonals.

  M[b, i, i + o] = values_o[b, i − max(0, −o)] on the diagonal of offset o (o > 0 above
  the main diagonal), for each o in ``offsets``; zero elsewhere.  values_o has the
  diagonal's length, min(rows, cols − o) for o ≥ 0 and min(rows + o, cols) for o < 0
  (``tf.linalg.diag_part``'s convention).  D_t of a cell is of this kind
  (:meth:`ok_tf.cells.KroneckerCell.d_diagonals`): S·k non-zeros out of S·k·n.
  """
  offsets: tuple      # Python ints, distinct
  values: tuple       # one [B, length_o] tensor per offset
  rows: int
  cols: int


def diagonals_inner(family: tf.Tensor, diag: Diagonals) -> tf.Tensor:
  """⟨F_i, M⟩ = Σ_{jk} F_i[j, k] M[j, k] for a family F ``[B, r, rows, cols]``: ``[B, r]``.

  Reads only the diagonals of F that M occupies (``tf.linalg.diag_part``).
  """
  return tf.add_n([tf.reduce_sum(tf.linalg.diag_part(family, k=o) * v[:, None, :], axis=-1)
                   for o, v in zip(diag.offsets, diag.values)])


def diagonals_sq_norm(diag: Diagonals) -> tf.Tensor:
  """‖M‖²_F, ``[B]``."""
  return tf.add_n([tf.reduce_sum(tf.square(v), axis=-1) for v in diag.values])


def add_diagonals(family: tf.Tensor, coeff: tf.Tensor, diag: Diagonals) -> tf.Tensor:
  """F_i + c_i M for a family F ``[B, r, rows, cols]`` and coefficients c ``[B, r]``.

  Writes only M's diagonals (``tf.linalg.set_diag``, which reuses F's buffer when F is
  not needed elsewhere), so it costs O(r · nnz(M)), not a pass over F.
  """
  for o, v in zip(diag.offsets, diag.values):
    update = tf.linalg.diag_part(family, k=o) + coeff[:, :, None] * v[:, None, :]
    family = tf.linalg.set_diag(family, update, k=o)
  return family


def diagonals_dense(diag: Diagonals) -> tf.Tensor:
  """M as a dense ``[B, rows, cols]`` tensor."""
  return tf.add_n([tf.linalg.diag(v, k=o, num_rows=diag.rows, num_cols=diag.cols)
                   for o, v in zip(diag.offsets, diag.values)])


class Reduction(NamedTuple):
  """Result of :func:`ok_reduce`."""
  left: tf.Tensor      # [B, r, a]
  right: tf.Tensor     # [B, r, m]
  kept: tf.Tensor      # [B] int32: singular values kept exactly by Opt
  variance: tf.Tensor  # [B]: (★) of this step, the added variance E‖G'_t − G_t‖² given the past


def ok_reduce(left: tf.Tensor, right: tf.Tensor, rank: int, rng: tf.random.Generator,
              balance: bool = True) -> Reduction:
  """OK: replace Σ_{i=1}^{r+1} ℓ_i ⊗ ρ_i by an unbiased r-term sum of minimum variance.

  1. Orthonormalise both families: [ℓ] = R_u Q_u, [ρ] = R_A Q_A, vectors as rows
     (:func:`orthonormalize`; docs/algorithms.md §4.1 writes the transposes, Q R with
     columns, see §4.4).
  2. C = R_uᵀ R_A, so Σ_i ℓ_i ⊗ ρ_i = Σ_{jk} C_jk q^u_j ⊗ q^A_k.
  3. (L, R) = Opt(C, r).
  4. u'_j = Σ_i L_ij q^u_i,  A'_j = Σ_i R_ij q^A_i  (one matmul each, no Q formed).
  5. With ``balance``, rescale each pair so that ‖u'_j‖ = ‖A'_j‖ (product unchanged).
     The norms come from the Gram matrices (‖M_j ρ‖² = M_j (ρρᵀ) M_jᵀ) and the scales
     are folded into the mixing matrices, so the big factors are read once and
     written once.

  Args:
    left: ``[B, r+1, a]`` the left family ℓ (u_1..u_r, ĥ_t).
    right: ``[B, r+1, m]`` the right family ρ flattened (H_t A_1..H_t A_r, D_t).
    rank: r.
    rng: ``tf.random.Generator``.
    balance: equalise the norms of each new pair.

  Returns:
    A :class:`Reduction` with the new factors ``[B, r, a]`` and ``[B, r, m]``.
  """
  gram_left = tf.matmul(left, left, transpose_b=True)
  gram_right = tf.matmul(right, right, transpose_b=True)
  mix_u, mix_a, kept, variance = _ok_mixing(gram_left, gram_right, rank, rng, balance)
  return Reduction(tf.matmul(mix_u, left), tf.matmul(mix_a, right), kept, variance)


def ok_reduce_structured(left: tf.Tensor, right: tf.Tensor, last: Diagonals, rank: int,
                         rng: tf.random.Generator, balance: bool = True) -> Reduction:
  """:func:`ok_reduce` with the right family ρ = (H_t A_1..H_t A_r, D_t), D_t sparse.

  The same reduction (the same random draw for the same ``rng`` state), computed
  without forming the [B, r+1, m] family:

  * the Gram matrix blockwise: ρ_i·ρ_j (i, j ≤ r) by one matmul, ρ_i·D from D's
    diagonals of ρ_i only (:func:`diagonals_inner`), D·D = Σ d²;
  * the new factors A'_j = Σ_{i≤r} M_ji ρ_i + M_j,r+1 D: one matmul with r (not r+1)
    terms, then D added on its diagonals in place (:func:`add_diagonals`).

  This saves the concatenation's write and read of the whole family, and the matmuls
  have r rather than r+1 rows (16 rather than 17 is a whole SIMD tile on CPU).

  Args:
    left: ``[B, r+1, a]`` the left family ℓ (u_1..u_r, ĥ_t).
    right: ``[B, r, rows, cols]`` the dense right factors H_t A_1..H_t A_r.
    last: the (r+1)-th right factor, D_t, as :class:`Diagonals` (``[B, rows, cols]``).
    rank: r.
    rng: ``tf.random.Generator``.
    balance: equalise the norms of each new pair.

  Returns:
    A :class:`Reduction` with ``left`` ``[B, r, a]`` and ``right`` ``[B, r, rows, cols]``.
  """
  gram_left = tf.matmul(left, left, transpose_b=True)
  mix_u, mix_a, kept, variance = _ok_mixing(gram_left, gram_with_diagonals(right, last),
                                            rank, rng, balance)
  return Reduction(tf.matmul(mix_u, left), mix_with_diagonals(mix_a, right, last), kept,
                   variance)


def gram_with_diagonals(right: tf.Tensor, last: Diagonals) -> tf.Tensor:
  """The Gram matrix of (ρ_1..ρ_r, M), ρ ``[B, r, rows, cols]`` dense, M :class:`Diagonals`.

  Blockwise, without forming the family: ρ_i·ρ_j by one matmul, ρ_i·M from M's
  diagonals of ρ_i (:func:`diagonals_inner`), M·M = ‖M‖².  Returns ``[B, r+1, r+1]``.
  """
  rank = right.shape[1]
  flat = tf.reshape(right, [tf.shape(right)[0], rank, -1])
  g_rr = tf.matmul(flat, flat, transpose_b=True)                    # [B, r, r]
  g_rd = diagonals_inner(right, last)                               # [B, r]
  g_dd = diagonals_sq_norm(last)                                    # [B]
  return tf.concat([tf.concat([g_rr, g_rd[:, :, None]], axis=2),
                    tf.concat([g_rd, g_dd[:, None]], axis=1)[:, None, :]], axis=1)


def mix_with_diagonals(mix: tf.Tensor, right: tf.Tensor, last: Diagonals) -> tf.Tensor:
  """A'_j = Σ_{i≤r} mix_ji ρ_i + mix_j,r+1 M: ``mix`` ``[B, r', r+1]``, ρ ``[B, r, rows, cols]``.

  One r-term matmul, then M added on its diagonals in place (:func:`add_diagonals`).
  Returns ``[B, r', rows, cols]``.
  """
  rank = right.shape[1]
  shape = tf.shape(right)
  flat = tf.reshape(right, [shape[0], rank, -1])
  out_shape = tf.concat([shape[:1], tf.shape(mix)[1:2], shape[2:]], axis=0)
  new = tf.reshape(tf.matmul(mix[:, :, :rank], flat), out_shape)
  return add_diagonals(new, mix[:, :, rank], last)


def _ok_mixing(gram_left: tf.Tensor, gram_right: tf.Tensor, rank: int,
               rng: tf.random.Generator, balance: bool):
  """Steps 1–5 of :func:`ok_reduce` from the two Gram matrices: (M_u, M_A, m, ★).

  The new factors are u' = M_u ℓ and A' = M_A ρ, with M ``[B, r, r+1]``.
  """
  basis_u = orthonormalize_gram(gram_left)
  basis_a = orthonormalize_gram(gram_right)
  # ℓ = R_u Q_u and ρ = R_A Q_A (rows), so Σ_i ℓ_i ⊗ ρ_i = Q_uᵀ (R_uᵀ R_A) Q_A.
  c = tf.matmul(basis_u.coefficients, basis_a.coefficients, transpose_a=True)
  lmat, rmat, kept, variance = opt(c, rank, rng, return_kept=True, return_variance=True)
  # u' = Lᵀ Q_u = (Lᵀ T_u) ℓ, A' = (Rᵀ T_A) ρ
  mix_u = tf.matmul(lmat, basis_u.to_basis, transpose_a=True)     # [B, r, q]
  mix_a = tf.matmul(rmat, basis_a.to_basis, transpose_a=True)
  if balance:
    gamma = _balance_scale(_squared_norms(mix_u, basis_u.gram),
                           _squared_norms(mix_a, basis_a.gram))
    mix_u *= gamma[:, :, None]
    mix_a /= gamma[:, :, None]
  return mix_u, mix_a, kept, variance


def _squared_norms(mix: tf.Tensor, gram: tf.Tensor) -> tf.Tensor:
  """‖Σ_i mix_ji F_i‖² for every j, from the Gram matrix of F: [B, r]."""
  return tf.reduce_sum(tf.matmul(mix, gram) * mix, axis=-1)


def _balance_scale(sq_left: tf.Tensor, sq_right: tf.Tensor) -> tf.Tensor:
  """γ = (‖A‖/‖u‖)^{1/2} = (‖A‖²/‖u‖²)^{1/4}, 1 where either norm is zero."""
  ok = (sq_left > 0.0) & (sq_right > 0.0)
  return tf.where(ok, tf.pow(tf.where(ok, sq_right, 1.0) / tf.where(ok, sq_left, 1.0), 0.25),
                  1.0)


def kf_reduce(u: tf.Tensor, a: tf.Tensor, hhat: tf.Tensor, d: tf.Tensor,
              rng: tf.random.Generator):
  """KF-RTRL's unbiased reduction of u ⊗ (H A) + ĥ ⊗ D to one term (Mujika et al. 2018).

      p_1 = √(‖H A‖ / ‖u‖),  p_2 = √(‖D‖ / ‖ĥ‖),  c_1, c_2 ∈ {±1} uniform
      u ← c_1 p_1 u + c_2 p_2 ĥ,    A ← c_1 (H A)/p_1 + c_2 D/p_2

  Vectorised over independent replicas (r-KF-RTRL-AVG): each has its own signs.
  A zero norm (u = 0 or A = 0 after every reset) sets p to 1: unbiasedness holds for
  any positive p, and the zero term contributes nothing.

  Args:
    u: ``[B, r, a]`` left factors.
    a: ``[B, r, m]`` H_t A, flattened.
    hhat: ``[B, a]`` ĥ_t.
    d: ``[B, m]`` D_t flattened.
    rng: ``tf.random.Generator``.

  Returns:
    (u', A') of the same shapes as (u, a).
  """
  dtype = u.dtype

  def ratio(num, den):
    good = (num > 0.0) & (den > 0.0)
    return tf.where(good, tf.sqrt(tf.where(good, num, 1.0) / tf.where(good, den, 1.0)), 1.0)

  p1 = ratio(tf.norm(a, axis=-1), tf.norm(u, axis=-1))[..., None]            # [B, r, 1]
  p2 = ratio(tf.norm(d, axis=-1), tf.norm(hhat, axis=-1))[:, None, None]     # [B, 1, 1]
  shape = tf.concat([tf.shape(u)[:2], [2]], axis=0)
  signs = random_signs(rng, shape, dtype)
  c1, c2 = signs[..., :1], signs[..., 1:]
  new_u = c1 * p1 * u + c2 * p2 * hhat[:, None, :]
  new_a = c1 * a / p1 + c2 * d[:, None, :] / p2
  return new_u, new_a
