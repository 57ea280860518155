"""Tests of ok_tf/kronecker.py: Opt(C, r), (★), orthonormalize, ok_reduce (dense and
structured), Diagonals, kf_reduce.

Statistical checks (docs/algorithms.md §6, §7): one C is tiled along the batch axis (every
row an independent draw), K = 32 batches come from independent generator streams
(``Generator.split``), and sample means are compared with z-scores built from the
standard error across the K batch means.  All seeds / keys are fixed.
"""

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import kronecker

import toolkit

K = 32            # independent batches
N = 4096          # draws per batch
Z_MEAN = 5.0      # max |z| over all entries of a mean (up to ~100 entries, t(31) tails)
Z_VAR = 4.0       # |z| of one scalar (the mean squared error vs (★))


SHARED = toolkit.SHARED
rng = toolkit.philox
zscores = toolkit.zscores


def generators(key, count=K):
  """``count`` independent streams (toolkit.split_streams)."""
  return toolkit.split_streams(key, count)


def star_numpy(sigma, rank, tol=1e-9):
  """(★) and m re-derived from the singular values (docs/algorithms.md §4.2, §4.3)."""
  sigma = np.sort(np.maximum(np.asarray(sigma, np.float64), 0.0))[::-1][:rank + 1]
  for m in range(rank):
    s_m = sigma[m:].sum()
    if (rank - m) * sigma[m] <= s_m * (1.0 + tol):
      break
  k = rank - m
  return s_m ** 2 / k - np.sum(sigma[m:] ** 2), m


def with_singular_values(sigma, seed):
  """U diag(σ) Vᵀ with random orthogonal U, V."""
  rs = np.random.RandomState(seed)
  q = len(sigma)
  u, _ = np.linalg.qr(rs.normal(size=(q, q)))
  v, _ = np.linalg.qr(rs.normal(size=(q, q)))
  return u @ np.diag(sigma) @ v.T


def opt_statistics(cs, rank, key, n=N, count=K):
  """For a batch of E matrices cs [E, q, q]: per-batch means of L Rᵀ and of ‖L Rᵀ − C‖².

  Returns (means [count, E, q, q], mse [count, E], kept [E], a sample (L, R)).
  """
  cs = np.asarray(cs, np.float64)
  e, q, _ = cs.shape
  tiled = tf.constant(np.repeat(cs, n, axis=0))            # [E·n, q, q]

  @tf.function
  def draw():
    left, right, kept = kronecker.opt(tiled, rank, SHARED, return_kept=True)
    prod = tf.matmul(left, right, transpose_b=True)
    err = tf.reduce_sum(tf.square(prod - tiled), axis=[1, 2])
    mean = tf.reduce_mean(tf.reshape(prod, [e, n, q, q]), axis=1)
    mse = tf.reduce_mean(tf.reshape(err, [e, n]), axis=1)
    return mean, mse, kept, left, right

  means, mses = [], []
  for _ in generators(key, count):
    mean, mse, kept, left, right = draw()
    means.append(mean.numpy())
    mses.append(mse.numpy())
  return np.stack(means), np.stack(mses), kept.numpy().reshape(e, n), (left, right)


def check_opt_statistics(cs, rank, key):
  cs = np.asarray(cs, np.float64)
  means, mses, kept, (left, right) = opt_statistics(cs, rank, key)
  q = rank + 1
  assert left.shape == (cs.shape[0] * N, q, rank) and right.shape == left.shape
  assert np.all(np.isfinite(left.numpy())) and np.all(np.isfinite(right.numpy()))
  variance = kronecker.opt_variance(tf.constant(cs), rank).numpy()
  for i, c in enumerate(cs):
    star, m = star_numpy(np.linalg.svd(c, compute_uv=False), rank)
    np.testing.assert_allclose(variance[i], star, rtol=1e-9, atol=1e-12)
    assert np.all(kept[i] == m), (kept[i][:5], m)
    # unbiased: E[L Rᵀ] = C
    z, mean, _ = zscores(means[:, i], c)
    assert np.max(np.abs(z)) < Z_MEAN, (i, np.max(np.abs(z)))
    # and the test has power: the error of the mean is far below one draw's spread
    if star > 0:
      assert np.max(np.abs(mean - c)) < 0.05 * np.sqrt(star), (mean - c, star)
    # E‖L Rᵀ − C‖² = (★)
    zv, mse, se = zscores(mses[:, i], star, floor=1e-12)
    assert abs(zv) < Z_VAR, (i, mse, star, se, zv)
    assert abs(mse - star) <= 0.02 * star + 1e-12, (mse, star)
  # rank(L Rᵀ) ≤ r on a batch of draws
  prod = tf.matmul(left, right, transpose_b=True).numpy()
  sv = np.linalg.svd(prod, compute_uv=False)
  assert np.all(sv[:, rank] <= 1e-10 * np.maximum(sv[:, 0], 1e-300)), np.max(sv[:, rank])
  return mses


# ----------------------------------------------------------------------------- Opt
@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_opt_random_c_unbiased_and_star(rank):
  c = np.random.RandomState(rank).normal(size=(1, rank + 1, rank + 1))
  mses = check_opt_statistics(c, rank, key=10 + rank)
  assert np.all(mses > 0)   # a random C really is random here


@pytest.mark.parametrize("sigma,rank", [
    ((1.0, 1.0, 1.0, 0.5, 0.0), 4),     # ties on top, σ_{r+1} = 0: exact
    ((1.0, 1.0, 1.0), 2),               # all equal: m = 0, p uniform
    ((1.0, 1.0, 0.5, 0.5), 3),          # (r − m)σ_{m+1} = s_m exactly at m = 0
    ((2.0, 1.0, 1.0, 1.0, 1.0), 4),
    ((1.0, 1.0, 1.0, 0.0), 3),          # tie and a zero: exact
])
def test_opt_repeated_singular_values(sigma, rank):
  c = with_singular_values(np.array(sigma), seed=len(sigma) + int(10 * sum(sigma)))
  star, _ = star_numpy(sigma, rank)
  mses = check_opt_statistics(c[None], rank, key=100 + rank)
  if sigma[-1] == 0.0:
    # σ_{r+1} = 0: exact up to rounding.  With an exact tie (r − m)σ_{m+1} = s_m at
    # m < r − 1 the mixing weights √(1 − p_i), p_i = 1 − O(ε), are O(√ε), so the
    # draws scatter by ~1e-8 around C (squared error ~1e-16): allow that.
    assert star < 1e-12 and np.max(mses) < 1e-14, np.max(mses)


def test_opt_examples_with_different_m():
  """One batch holding C's whose m differ (0, 1, 2 for r = 3), plus a zero C."""
  rank = 3
  profiles = [(1.0, 1.0, 1.0, 1.0),        # m = 0
              (10.0, 1.0, 1.0, 1.0),       # m = 1
              (100.0, 10.0, 1.0, 0.5),     # m = 2
              (3.0, 2.0, 1.0, 0.0)]        # σ_4 = 0
  cs = np.stack([with_singular_values(np.array(s), seed=20 + i) for i, s in enumerate(profiles)])
  ms = [star_numpy(s, rank)[1] for s in profiles]
  assert ms[:3] == [0, 1, 2]
  check_opt_statistics(cs, rank, key=200)
  # the same matrices with a zero one interleaved: the zero stays exactly zero
  cs0 = np.concatenate([cs, np.zeros((1, 4, 4))])
  left, right = kronecker.opt(tf.constant(cs0), rank, rng(201))
  assert np.all(left.numpy()[-1] == 0) and np.all(right.numpy()[-1] == 0)
  assert np.all(np.isfinite(left.numpy()))


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_opt_zero_matrix(rank):
  c = tf.zeros([7, rank + 1, rank + 1], tf.float64)
  left, right, kept = kronecker.opt(c, rank, rng(300), return_kept=True)
  assert left.shape == (7, rank + 1, rank) and right.shape == (7, rank + 1, rank)
  assert np.all(left.numpy() == 0.0) and np.all(right.numpy() == 0.0)
  assert np.all((kept.numpy() >= 0) & (kept.numpy() <= rank - 1))
  np.testing.assert_array_equal(kronecker.opt_variance(c, rank).numpy(), np.zeros(7))


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_opt_exact_when_sigma_r_plus_1_is_zero(rank):
  """rank(C) ≤ r: Opt returns C itself, every draw (variance 0)."""
  rs = np.random.RandomState(400 + rank)
  q = rank + 1
  c = rs.normal(size=(16, q, rank)) @ rs.normal(size=(16, rank, q))
  tc = tf.constant(c)
  for key in (401, 402, 403):
    left, right = kronecker.opt(tc, rank, rng(key))
    prod = tf.matmul(left, right, transpose_b=True).numpy()
    assert np.max(np.abs(prod - c)) < 1e-12 * np.max(np.abs(c)), np.max(np.abs(prod - c))
  assert np.max(kronecker.opt_variance(tc, rank).numpy()) < 1e-12 * np.max(c ** 2)


def test_opt_rank1_variance_is_2_sigma1_sigma2():
  rs = np.random.RandomState(500)
  c = rs.normal(size=(50, 2, 2))
  sigma = np.linalg.svd(c, compute_uv=False)
  np.testing.assert_allclose(kronecker.opt_variance(tf.constant(c), 1).numpy(),
                             2.0 * sigma[:, 0] * sigma[:, 1], rtol=1e-10)
  # diagonal C: the variance is 2 σ1 σ2 in closed form
  d = tf.constant([[[3.0, 0.0], [0.0, 2.0]]], tf.float64)
  np.testing.assert_allclose(kronecker.opt_variance(d, 1).numpy(), [12.0], rtol=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3, 6])
def test_opt_variance_matches_numpy(rank):
  rs = np.random.RandomState(600 + rank)
  q = rank + 1
  # random matrices with spread-out spectra, so that every m occurs
  cs = np.stack([with_singular_values(np.sort(rs.exponential(size=q) ** rs.uniform(0, 4))[::-1],
                                      seed=700 + i) for i in range(200)])
  got = kronecker.opt_variance(tf.constant(cs), rank).numpy()
  stars, ms = zip(*[star_numpy(np.linalg.svd(c, compute_uv=False), rank) for c in cs])
  np.testing.assert_allclose(got, stars, rtol=1e-9, atol=1e-12)
  _, _, kept = kronecker.opt(tf.constant(cs), rank, rng(601), return_kept=True)
  np.testing.assert_array_equal(kept.numpy(), ms)
  if rank > 1:
    assert len(set(ms)) > 1, ms


def test_opt_variance_is_below_naive_alternatives():
  """(★) beats keeping r−1 triples and mixing the last two (a valid unbiased scheme)."""
  rs = np.random.RandomState(800)
  rank = 4
  cs = rs.normal(size=(100, rank + 1, rank + 1))
  star = kronecker.opt_variance(tf.constant(cs), rank).numpy()
  sigma = np.linalg.svd(cs, compute_uv=False)
  naive = 2.0 * sigma[:, rank - 1] * sigma[:, rank]
  assert np.all(star <= naive * (1 + 1e-12))
  assert np.all(star > 0)


def test_opt_float32_finite():
  rank = 4
  rs = np.random.RandomState(900)
  c = rs.normal(size=(1, rank + 1, rank + 1)).astype(np.float32)
  zero = np.zeros_like(c)
  exact = (rs.normal(size=(rank + 1, rank)) @ rs.normal(size=(rank, rank + 1)))[None]
  cs = tf.constant(np.concatenate([np.repeat(c, 2048, 0), zero, exact.astype(np.float32)]))
  left, right = kronecker.opt(cs, rank, rng(901))
  assert left.dtype == tf.float32
  prod = tf.matmul(left, right, transpose_b=True).numpy()
  assert np.all(np.isfinite(prod))
  assert np.all(prod[-2] == 0.0)
  np.testing.assert_allclose(prod[-1], exact[0], atol=1e-4 * np.max(np.abs(exact)))
  # rough unbiasedness in float32 as well
  mean = prod[:2048].mean(0)
  spread = np.sqrt(kronecker.opt_variance(tf.constant(c), rank).numpy()[0] / 2048)
  assert np.max(np.abs(mean - c[0])) < 6 * spread
  assert np.isfinite(kronecker.opt_variance(cs, rank).numpy()).all()


# ----------------------------------------------------------------------------- orthonormalize
def check_basis(family, ortho_tol=1e-10):
  family = np.asarray(family, np.float64)
  basis = kronecker.orthonormalize(tf.constant(family))
  t, r = basis.to_basis.numpy(), basis.coefficients.numpy()
  q = family.shape[1]
  assert t.shape == (family.shape[0], q, q) and r.shape == t.shape
  assert np.all(np.isfinite(t)) and np.all(np.isfinite(r))
  qmat = t @ family
  for b in range(family.shape[0]):
    rank = np.linalg.matrix_rank(family[b]) if np.any(family[b]) else 0
    gram = qmat[b] @ qmat[b].T
    # orthonormal or zero rows: Q Qᵀ is diagonal with 0/1 entries, trace = rank
    diag = np.diag(gram)
    np.testing.assert_allclose(gram, np.diag(diag), atol=ortho_tol)
    assert np.all((np.abs(diag) < ortho_tol) | (np.abs(diag - 1.0) < ortho_tol)), diag
    assert int(round(diag.sum())) == rank, (diag, rank)
    # F = R Q reconstructs the family
    scale = max(np.max(np.abs(family[b])), 1e-300)
    assert np.max(np.abs(r[b] @ qmat[b] - family[b])) <= 1e-10 * scale
  return t, r


def test_orthonormalize_full_rank():
  rs = np.random.RandomState(1000)
  check_basis(rs.normal(size=(6, 4, 10)))
  # badly scaled rows: the Gram matrix squares the condition number (κ² ≈ 1e12 here),
  # so orthonormality holds only to ~1e-10·κ², but F = R Q stays exact
  f = rs.normal(size=(3, 4, 10)) * np.array([1e3, 1.0, 1e-3, 1.0])[None, :, None]
  check_basis(f, ortho_tol=1e-6)


def test_orthonormalize_rank_deficient():
  rs = np.random.RandomState(1001)
  f = rs.normal(size=(5, 4, 10))
  f[:, 3] = f[:, 0]                       # duplicated row
  f[1, 2] = 2.0 * f[1, 1] - f[1, 0]       # a further combination
  f[2, 1] = 0.0                           # a zero row
  check_basis(f)
  # more vectors than dimensions (a < r + 1)
  check_basis(rs.normal(size=(3, 5, 3)))


def test_orthonormalize_all_zero():
  f = np.zeros((4, 3, 8))
  t, r = check_basis(f)
  assert np.all(t == 0) and np.all(r == 0)
  # mixed in one batch with non-zero families
  rs = np.random.RandomState(1002)
  g = rs.normal(size=(3, 3, 8))
  g[1] = 0.0
  check_basis(g)


# ----------------------------------------------------------------------------- ok_reduce
def kron_sum(left, right):
  """Σ_i ℓ_i ⊗ ρ_i as a [B, a, m] matrix."""
  return np.einsum("bia,bim->bam", np.asarray(left), np.asarray(right))


def ok_statistics(left, right, rank, key, balance=True, n=N, count=K):
  left = tf.constant(np.repeat(left[None], n, 0))
  right = tf.constant(np.repeat(right[None], n, 0))
  target = kron_sum(left[:1], right[:1])[0]

  @tf.function
  def draw():
    red = kronecker.ok_reduce(left, right, rank, SHARED, balance=balance)
    prod = tf.einsum("bia,bim->bam", red.left, red.right)
    err = tf.reduce_sum(tf.square(prod - target), axis=[1, 2])
    return tf.reduce_mean(prod, 0), tf.reduce_mean(err), red

  means, mses = [], []
  for _ in generators(key, count):
    mean, mse, red = draw()
    means.append(mean.numpy())
    mses.append(mse.numpy())
  return target, np.stack(means), np.array(mses), red


@pytest.mark.parametrize("rank,a,m", [(1, 4, 6), (2, 5, 6), (4, 6, 12)])
def test_ok_reduce_unbiased_with_star_variance(rank, a, m):
  rs = np.random.RandomState(1100 + rank)
  left = rs.normal(size=(rank + 1, a))
  right = rs.normal(size=(rank + 1, m))
  target, means, mses, red = ok_statistics(left, right, rank, key=1100 + rank)
  assert red.left.shape == (N, rank, a) and red.right.shape == (N, rank, m)
  z, mean, _ = zscores(means, target)
  assert np.max(np.abs(z)) < Z_MEAN, np.max(np.abs(z))
  # (★) of C equals (★) of the Kronecker sum itself (orthonormal bases)
  star, m_np = star_numpy(np.linalg.svd(target, compute_uv=False), rank)
  np.testing.assert_allclose(red.variance.numpy(), star, rtol=1e-8)
  assert np.all(red.kept.numpy() == m_np)
  assert np.max(np.abs(mean - target)) < 0.05 * np.sqrt(star)
  zv, mse, _ = zscores(mses, star, floor=1e-12)
  assert abs(zv) < Z_VAR, (mse, star, zv)


def test_ok_reduce_exact_when_span_at_most_r():
  rs = np.random.RandomState(1200)
  rank, b = 3, 8
  # (1) left family of rank ≤ r (last = sum of two others)
  left = rs.normal(size=(b, rank + 1, 6))
  left[:, -1] = left[:, 0] + left[:, 1]
  right = rs.normal(size=(b, rank + 1, 10))
  # (2) right family of rank ≤ r in other examples
  right[4:, 2] = 0.5 * right[4:, 0]
  left[4:] = rs.normal(size=(4, rank + 1, 6))
  target = kron_sum(left, right)
  for key in (1201, 1202):
    red = kronecker.ok_reduce(tf.constant(left), tf.constant(right), rank, rng(key))
    got = kron_sum(red.left, red.right)
    assert np.max(np.abs(got - target)) < 1e-11 * np.max(np.abs(target))
    assert np.max(red.variance.numpy()) < 1e-10 * np.max(target ** 2)
  # (3) fewer dimensions than terms: a = 2 < r + 1
  left = rs.normal(size=(b, rank + 1, 2))
  right = rs.normal(size=(b, rank + 1, 10))
  red = kronecker.ok_reduce(tf.constant(left), tf.constant(right), rank, rng(1203))
  target = kron_sum(left, right)
  assert np.max(np.abs(kron_sum(red.left, red.right) - target)) < 1e-11 * np.max(np.abs(target))


def test_ok_reduce_zero_families():
  rank = 2
  rs = np.random.RandomState(1300)
  nonzero_l, nonzero_r = rs.normal(size=(rank + 1, 5)), rs.normal(size=(rank + 1, 7))
  left = np.stack([np.zeros((rank + 1, 5)), nonzero_l, np.zeros((rank + 1, 5))])
  right = np.stack([nonzero_r, np.zeros((rank + 1, 7)), np.zeros((rank + 1, 7))])
  for balance in (True, False):
    red = kronecker.ok_reduce(tf.constant(left), tf.constant(right), rank, rng(1301),
                              balance=balance)
    for field in (red.left, red.right, red.variance):
      assert np.all(np.isfinite(field.numpy()))
    np.testing.assert_array_equal(kron_sum(red.left, red.right), np.zeros((3, 5, 7)))
    np.testing.assert_array_equal(red.variance.numpy(), np.zeros(3))
  # the start of a sequence: u = 0, A = 0 except the new term ĥ ⊗ D → exact
  left = np.zeros((1, rank + 1, 5))
  right = np.zeros((1, rank + 1, 7))
  left[0, -1], right[0, -1] = nonzero_l[0], nonzero_r[0]
  red = kronecker.ok_reduce(tf.constant(left), tf.constant(right), rank, rng(1302))
  np.testing.assert_allclose(kron_sum(red.left, red.right), kron_sum(left, right),
                             atol=1e-14)


def test_ok_reduce_balance():
  rank = 3
  rs = np.random.RandomState(1400)
  left = rs.normal(size=(16, rank + 1, 5)) * 10.0
  right = rs.normal(size=(16, rank + 1, 9)) * 0.01
  left[3] = 0.0
  lt, rt = tf.constant(left), tf.constant(right)
  bal = kronecker.ok_reduce(lt, rt, rank, rng(1401), balance=True)
  raw = kronecker.ok_reduce(lt, rt, rank, rng(1401), balance=False)
  nu = np.linalg.norm(bal.left.numpy(), axis=-1)
  na = np.linalg.norm(bal.right.numpy(), axis=-1)
  np.testing.assert_allclose(nu, na, rtol=1e-10, atol=1e-300)
  # the inputs are far from balanced (‖ℓ_i‖ ≈ 2e3 ‖ρ_i‖), the outputs are
  assert np.min(np.linalg.norm(left[:3], axis=-1) / np.linalg.norm(right[:3], axis=-1)) > 100
  # each product u_j ⊗ A_j (hence the sum) unchanged
  per_term_bal = np.einsum("bja,bjm->bjam", bal.left.numpy(), bal.right.numpy())
  per_term_raw = np.einsum("bja,bjm->bjam", raw.left.numpy(), raw.right.numpy())
  np.testing.assert_allclose(per_term_bal, per_term_raw, rtol=0,
                             atol=1e-12 * np.max(np.abs(per_term_raw)))
  assert np.all(np.isfinite(bal.left.numpy())) and np.all(bal.left.numpy()[3] == 0)
  np.testing.assert_array_equal(bal.variance.numpy(), raw.variance.numpy())


def test_ok_reduce_kept_range():
  rank = 4
  rs = np.random.RandomState(1500)
  left = rs.normal(size=(64, rank + 1, 6)) * rs.exponential(size=(64, rank + 1, 1)) ** 3
  right = rs.normal(size=(64, rank + 1, 8))
  red = kronecker.ok_reduce(tf.constant(left), tf.constant(right), rank, rng(1501))
  kept = red.kept.numpy()
  assert kept.dtype == np.int32 and np.all((kept >= 0) & (kept <= rank - 1))
  assert len(set(kept.tolist())) > 1
  assert np.all(red.variance.numpy() >= 0)


# ----------------------------------------------------------------------------- Diagonals
def random_diagonals(rs, batch, rows, cols, offsets):
  values = []
  for o in offsets:
    length = min(rows, cols - o) if o >= 0 else min(rows + o, cols)
    values.append(tf.constant(rs.normal(size=(batch, length))))
  return kronecker.Diagonals(tuple(offsets), tuple(values), rows, cols)


@pytest.mark.parametrize("rows,cols,offsets", [(5, 10, (0, 5)), (6, 12, (-3, 0, 3, 6, 9)),
                                               (4, 4, (0,)), (7, 3, (-4, -1, 2))])
def test_diagonals_against_dense(rows, cols, offsets):
  """inner, squared norm, dense layout and in-place add agree with dense numpy."""
  rs = np.random.RandomState(1600 + rows)
  diag = random_diagonals(rs, 3, rows, cols, offsets)
  dense = np.zeros((3, rows, cols))
  for o, v in zip(offsets, diag.values):
    for i in range(v.shape[-1]):
      r0 = i + max(0, -o)
      dense[:, r0, r0 + o] = v.numpy()[:, i]
  np.testing.assert_array_equal(kronecker.diagonals_dense(diag).numpy(), dense)
  family = rs.normal(size=(3, 4, rows, cols))
  np.testing.assert_allclose(kronecker.diagonals_inner(tf.constant(family), diag).numpy(),
                             np.einsum("brij,bij->br", family, dense), rtol=1e-13)
  np.testing.assert_allclose(kronecker.diagonals_sq_norm(diag).numpy(),
                             np.sum(dense ** 2, axis=(1, 2)), rtol=1e-13)
  coeff = rs.normal(size=(3, 4))
  got = kronecker.add_diagonals(tf.constant(family), tf.constant(coeff), diag).numpy()
  np.testing.assert_allclose(got, family + coeff[:, :, None, None] * dense[:, None],
                             rtol=0, atol=1e-14)


@pytest.mark.parametrize("rank", (1, 3))
def test_ok_reduce_structured_equals_ok_reduce(rank):
  """Same rng state → the same reduction as ok_reduce on the concatenated family,
  to float64 rounding, including zero (reset) streams and a zero D."""
  rs = np.random.RandomState(1700 + rank)
  b, a, rows, cols = 6, 5, 4, 8
  diag = random_diagonals(rs, b, rows, cols, (0, 4))
  values = [v.numpy() for v in diag.values]
  values[0][2] = 0.0
  values[1][2] = 0.0                                    # stream 2: D = 0
  diag = diag._replace(values=tuple(tf.constant(v) for v in values))
  left = rs.normal(size=(b, rank + 1, a))
  right = rs.normal(size=(b, rank, rows, cols))
  left[3], right[3] = 0.0, 0.0                          # stream 3: reset (u = 0, A = 0)
  left[3, -1] = rs.normal(size=a)
  dense_d = kronecker.diagonals_dense(diag).numpy().reshape(b, 1, rows * cols)
  family = np.concatenate([right.reshape(b, rank, -1), dense_d], axis=1)
  for balance in (True, False):
    ref = kronecker.ok_reduce(tf.constant(left), tf.constant(family), rank, rng(1701),
                              balance=balance)
    got = kronecker.ok_reduce_structured(tf.constant(left), tf.constant(right), diag, rank,
                                         rng(1701), balance=balance)
    assert got.right.shape == (b, rank, rows, cols)
    np.testing.assert_array_equal(got.kept.numpy(), ref.kept.numpy())
    np.testing.assert_allclose(got.left.numpy(), ref.left.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.right.numpy().reshape(b, rank, -1), ref.right.numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.variance.numpy(), ref.variance.numpy(), rtol=1e-9,
                               atol=1e-12)
    # and it is the reduction of the true sum: exact for the reset stream
    target = kron_sum(left, family)
    np.testing.assert_allclose(kron_sum(got.left, got.right.numpy().reshape(b, rank, -1))[3],
                               target[3], atol=1e-12)


# ----------------------------------------------------------------------------- kf_reduce
def kf_statistics(u, a, hhat, d, key, n=N, count=K):
  tile = lambda x: tf.constant(np.repeat(np.asarray(x)[None], n, 0))
  ut, at, ht, dt = tile(u), tile(a), tile(hhat), tile(d)

  @tf.function
  def draw():
    nu, na = kronecker.kf_reduce(ut, at, ht, dt, SHARED)
    prod = tf.einsum("bra,brm->bram", nu, na)
    return tf.reduce_mean(prod, 0), nu, na

  means = []
  for _ in generators(key, count):
    mean, nu, na = draw()
    means.append(mean.numpy())
  return np.stack(means), nu.numpy(), na.numpy()


def test_kf_reduce_unbiased():
  rs = np.random.RandomState(1600)
  r, a_dim, m = 3, 4, 6
  u = rs.normal(size=(r, a_dim))
  a = rs.normal(size=(r, m)) * 3.0
  hhat = rs.normal(size=(a_dim,))
  d = rs.normal(size=(m,)) * 0.2
  means, nu, na = kf_statistics(u, a, hhat, d, key=1601)
  assert nu.shape == (N, r, a_dim) and na.shape == (N, r, m)
  target = np.einsum("ra,rm->ram", u, a) + np.einsum("a,m->am", hhat, d)[None]
  z, mean, se = zscores(means, target)
  assert np.max(np.abs(z)) < Z_MEAN, np.max(np.abs(z))
  # power: a single draw is far off, the mean is close
  single = np.einsum("bra,brm->bram", nu, na)
  spread = np.sqrt(np.mean((single - target) ** 2))
  assert np.sqrt(np.mean((mean - target) ** 2)) < 0.02 * spread
  # every draw is u' = c1 p1 u + c2 p2 ĥ with signs c1, c2 and the KF scales p1, p2
  p1 = np.sqrt(np.linalg.norm(a, axis=-1) / np.linalg.norm(u, axis=-1))     # [r]
  p2 = np.sqrt(np.linalg.norm(d) / np.linalg.norm(hhat))
  c1 = np.empty((N, r))
  c2 = np.empty((N, r))
  for j in range(r):
    basis = np.stack([p1[j] * u[j], p2 * hhat], axis=1)                 # [a, 2]
    coef, *_ = np.linalg.lstsq(basis, nu[:, j].T, rcond=None)          # [2, N]
    c1[:, j], c2[:, j] = coef
    np.testing.assert_allclose(na[:, j], c1[:, j, None] * a[j] / p1[j]
                               + c2[:, j, None] * d / p2, atol=1e-12)
  np.testing.assert_allclose(np.abs(c1), 1.0, atol=1e-12)
  np.testing.assert_allclose(np.abs(c2), 1.0, atol=1e-12)
  # the signs are fair and independent across the two terms and across replicas
  for x, y in ((c1[:, 0], c2[:, 0]), (c1[:, 0], c1[:, 1]), (c2[:, 0], c2[:, 2]),
               (c1[:, 1], c2[:, 2])):
    assert abs(np.mean(x)) < 0.06 and abs(np.mean(x * y)) < 0.06


def test_kf_reduce_zero_factors():
  rs = np.random.RandomState(1700)
  r, a_dim, m = 2, 4, 5
  hhat = rs.normal(size=(a_dim,))
  d = rs.normal(size=(m,))
  target = np.einsum("a,m->am", hhat, d)
  # u = 0 and A = 0 (every reset): exact ĥ ⊗ D, deterministically
  nu, na = kronecker.kf_reduce(tf.zeros([3, r, a_dim], tf.float64),
                               tf.zeros([3, r, m], tf.float64),
                               tf.constant(np.repeat(hhat[None], 3, 0)),
                               tf.constant(np.repeat(d[None], 3, 0)), rng(1701))
  assert np.all(np.isfinite(nu.numpy())) and np.all(np.isfinite(na.numpy()))
  np.testing.assert_allclose(np.einsum("bra,brm->bram", nu.numpy(), na.numpy()),
                             np.broadcast_to(target, (3, r, a_dim, m)), atol=1e-14)
  # u = 0, A ≠ 0 (and u ≠ 0, A = 0): finite and unbiased for ĥ ⊗ D (+ u ⊗ A = 0)
  for u, a in ((np.zeros((r, a_dim)), rs.normal(size=(r, m))),
               (rs.normal(size=(r, a_dim)), np.zeros((r, m)))):
    means, nu, na = kf_statistics(u, a, hhat, d, key=1702, n=1024)
    assert np.all(np.isfinite(nu)) and np.all(np.isfinite(na))
    z, _, _ = zscores(means, np.broadcast_to(target, (r, a_dim, m)))
    assert np.max(np.abs(z)) < Z_MEAN
  # ĥ = 0 or D = 0: finite, and the old term survives in expectation exactly
  u, a = rs.normal(size=(1, r, a_dim)), rs.normal(size=(1, r, m))
  nu, na = kronecker.kf_reduce(tf.constant(u), tf.constant(a), tf.zeros([1, a_dim], tf.float64),
                               tf.zeros([1, m], tf.float64), rng(1703))
  np.testing.assert_allclose(np.einsum("bra,brm->bram", nu.numpy(), na.numpy()),
                             np.einsum("bra,brm->bram", u, a), atol=1e-13)
