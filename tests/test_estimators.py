"""Tests of the estimators (ok_tf/estimators/): exact RTRL = BPTT, full-rank OK = RTRL, unbiasedness of
the stochastic estimators, variance ordering (docs/algorithms.md §6), SnAp-1 (its
recursion, exactness without recurrent weights, its bias), the protocol (per-example
gradients, influence, reset, dtypes, tf.function tracing, ``get`` errors, OK diagnostics)
and the registry (labels, rank rule, cost models).

Statistical checks: the same input sequence in every batch row (each row an independent
draw), K = 32 batches from independent generator streams, z-scores of the mean of the
batch means against exact RTRL with the standard error across batch means.
"""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import cells
from ok_tf import estimators

import toolkit

SHARED = toolkit.SHARED

NAMES = tuple(cells.CELLS)       # every registered cell
# every estimator of the registry, with rank 2 where it takes a rank
STOCHASTIC = tuple((n, 2 if m.takes_rank else None) for n, m in estimators.ESTIMATORS.items()
                   if m.stochastic)
DETERMINISTIC = tuple((n, None) for n, m in estimators.ESTIMATORS.items() if not m.stochastic)
K = 32          # independent batches in statistical tests
Z_MAX = 5.0     # max |z| over all entries of W (≤ ~100 entries, t(31) tails)

rng = toolkit.philox
make_cell = toolkit.make_cell


def streams(key, count=K):
  """``count`` independent streams (toolkit.split_streams)."""
  return toolkit.split_streams(key, count)


def make_estimator(name, cell, rank=None):
  return estimators.get(name, cell, rank=rank)


def zero_recurrent_weights(cell):
  """W_h = 0: H_t keeps only the cell's direct part (diagonal, or the LSTM's 2 × 2 blocks)."""
  kernel = cell.kernel.numpy()
  kernel[cell.input_dim:cell.input_dim + cell.units] = 0.0
  cell.kernel.assign(kernel)
  return cell


def one_hot_sequence(steps, input_dim, seed):
  rs = np.random.RandomState(seed)
  return np.eye(input_dim)[rs.randint(input_dim, size=steps)]


rel = toolkit.rel_err


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", NAMES)
def test_rtrl_equals_bptt(name):
  steps, batch = 8, 3
  cell = make_cell(name, seed=1)
  rs = np.random.RandomState(2)
  xs = tf.constant(rs.normal(size=(steps, batch, cell.input_dim)))
  gs = tf.constant(rs.normal(size=(steps, batch, cell.state_size)))
  # BPTT: loss = Σ_t Σ_b ⟨g_t, s_t⟩ through the cell's own call
  with tf.GradientTape() as tape:
    s = cell.zero_state(batch)
    loss = 0.0
    for t in range(steps):
      s = cell.step(xs[t], s)
      loss += tf.reduce_sum(gs[t] * s)
  bptt = tape.gradient(loss, cell.kernel).numpy() / batch
  # RTRL, forward in time
  est = make_estimator("rtrl", cell)
  state = est.init(batch)
  total = np.zeros_like(bptt)
  for t in range(steps):
    state = est.step(state, xs[t], None)
    grads = est.gradient(state, gs[t])
    assert len(grads) == 1 and grads[0].shape == cell.kernel.shape
    total += grads[0].numpy()
  np.testing.assert_allclose(state.h.numpy(), s.numpy(), rtol=0, atol=1e-14)
  assert np.max(np.abs(bptt)) > 1e-2
  assert rel(total, bptt) < 1e-10, rel(total, bptt)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_rtrl_step_is_the_dense_recursion(name, batch):
  """G_t = H_t G_{t−1} + ĥ_t ⊗ D_t computed densely (numpy) from the cell's linearisation:
  the step that adds ĥ_t ⊗ D_t on its diagonals only gives the same G_t and gradients
  (with one stream, H_t G_{t−1} is a 2-D product)."""
  steps = 6
  cell = make_cell(name, seed=11)
  est = make_estimator("rtrl", cell)
  rs = np.random.RandomState(11)
  state = est.init(batch)
  dense = np.zeros((batch, cell.state_size, cell.hhat_size, cell.kernel_columns))
  for _ in range(steps):
    x = tf.constant(rs.normal(size=(batch, cell.input_dim)))
    dl = rs.normal(size=(batch, cell.state_size))
    st = cell.linearize(x, state.h)
    d = cell.dense_d(st.gates).numpy()
    dense = (np.einsum("bst,btap->bsap", st.jacobian.numpy(), dense)
             + st.hhat.numpy()[:, None, :, None] * d[:, :, None, :])
    state = est.step(state, x)
    np.testing.assert_array_equal(state.h.numpy(), st.state.numpy())
    assert rel(est.influence(state).numpy(), dense) < 1e-12
    rows = np.einsum("bs,bsap->bap", dl, dense)
    assert rel(est.per_example_gradient(state, tf.constant(dl)).numpy(), rows) < 1e-12
    assert rel(est.gradient(state, tf.constant(dl))[0].numpy(), rows.mean(0)) < 1e-12
  assert np.max(np.abs(dense)) > 1e-2


@pytest.mark.parametrize("shape,static", [((1, 5, 7, 9), True), ((1, 5, 7, 9), False),
                                          ((3, 5, 7, 9), True)])
def test_stream_matmul_is_the_batched_matmul(shape, static):
  """``stream_matmul`` is tf.matmul stream by stream; with one stream and static shapes it
  is one 2-D MatMul in the graph (no BatchMatMulV2)."""
  b, m, k, p = shape
  rs = np.random.RandomState(3)
  a, c = tf.constant(rs.normal(size=(b, m, k))), tf.constant(rs.normal(size=(b, k, p)))
  spec = [tf.TensorSpec([b if static else None, m, k], tf.float64),
          tf.TensorSpec([b if static else None, k, p], tf.float64)]
  product = tf.function(estimators.stream_matmul, input_signature=spec)
  out = product(a, c).numpy()
  assert out.shape == (b, m, p)
  assert rel(out, np.einsum("bmk,bkp->bmp", a.numpy(), c.numpy())) < 1e-14
  ops = {op.type for op in product.get_concrete_function().graph.get_operations()}
  two_d = b == 1 and static
  assert ("MatMul" in ops, "BatchMatMulV2" in ops) == (two_d, not two_d)


def test_rtrl_step_under_xla_is_the_step():
  """Under ``jit_compile`` (the trainers' option) RTRL adds ĥ_t ⊗ D_t by XLA's scatter,
  and with a batch size unknown when traced its rows are computed in the graph: the same
  G_t as the step TensorFlow runs."""
  cell = make_cell("lstm", seed=12)
  est = make_estimator("rtrl", cell)
  rs = np.random.RandomState(12)
  step = tf.function(est.step)
  step_xla = tf.function(est.step, jit_compile=True)
  spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype),
                               est.init(3))
  step_any_batch = tf.function(lambda s, x: est.step(s, x)).get_concrete_function(
      spec, tf.TensorSpec([None, cell.input_dim], tf.float64))
  state = state_xla = state_any = est.init(3)
  for _ in range(3):
    x = tf.constant(rs.normal(size=(3, cell.input_dim)))
    state, state_xla = step(state, x), step_xla(state_xla, x)
    state_any = step_any_batch(state_any, x)
  assert rel(est.influence(state_xla).numpy(), est.influence(state).numpy()) < 1e-12
  assert rel(est.influence(state_any).numpy(), est.influence(state).numpy()) < 1e-12


@pytest.mark.parametrize("name,units,input_dim", [(n, 3, 3) for n in NAMES] + [("tanh", 2, 8)])
def test_full_rank_ok_equals_rtrl(name, units, input_dim):
  """r ≥ min(a, S·k·n): σ_{r+1} = 0, Opt is exact and OK is exact RTRL at every step."""
  steps, batch = 8, 4
  cell = make_cell(name, units=units, input_dim=input_dim, seed=3)
  rank = min(cell.hhat_size, cell.state_size * cell.kernel_columns)
  if (name, input_dim) == ("tanh", 8):
    assert rank == cell.state_size * cell.kernel_columns < cell.hhat_size
  rs = np.random.RandomState(4)
  xs = tf.constant(rs.normal(size=(steps, batch, input_dim)))
  gs = tf.constant(rs.normal(size=(steps, batch, cell.state_size)))
  exact, ok = make_estimator("rtrl", cell), make_estimator("ok", cell, rank)
  s_exact, s_ok = exact.init(batch), ok.init(batch)
  g = rng(5)
  for t in range(steps):
    s_exact = exact.step(s_exact, xs[t], g)
    s_ok = ok.step(s_ok, xs[t], g)
    assert s_ok.u.shape == (batch, rank, cell.hhat_size)
    assert s_ok.a.shape == (batch, rank, cell.state_size, cell.kernel_columns)
    np.testing.assert_array_equal(s_ok.h.numpy(), s_exact.h.numpy())
    target = exact.influence(s_exact).numpy()
    err = rel(ok.influence(s_ok).numpy(), target)
    assert err < 1e-9, (t, err)
    ge, go = exact.gradient(s_exact, gs[t])[0], ok.gradient(s_ok, gs[t])[0]
    assert rel(go.numpy(), ge.numpy()) < 1e-9, (t, rel(go.numpy(), ge.numpy()))
  assert np.max(np.abs(target)) > 1e-2


@pytest.mark.parametrize("name,rank", [("ok", 1), ("ok", 3), ("kf", None), ("kf_avg", 3),
                                       ("snap1", None)])
def test_first_step_is_exact(name, rank):
  """From G' = 0 the first step is the rank-1 ĥ_1 ⊗ D_1: every Kronecker method is exact,
  and so is SnAp-1 (ĥ_1 ⊗ D_1 lies in its pattern)."""
  cell = make_cell("rhn", seed=6)
  rs = np.random.RandomState(6)
  x = tf.constant(rs.normal(size=(5, cell.input_dim)))
  exact = make_estimator("rtrl", cell).step(make_estimator("rtrl", cell).init(5), x)
  est = make_estimator(name, cell, rank)
  state = est.step(est.init(5), x, rng(7))
  got = est.influence(state).numpy()
  assert rel(got, make_estimator("rtrl", cell).influence(exact).numpy()) < 1e-12


@pytest.mark.parametrize("cell_name", NAMES)
def test_per_example_gradient_and_influence(cell_name):
  """gradient = batch mean of per_example_gradient = (∂L/∂s)_b G'_b with G' = influence."""
  cell = make_cell(cell_name, seed=8)
  rs = np.random.RandomState(8)
  x = tf.constant(rs.normal(size=(6, cell.input_dim)))
  dl = tf.constant(rs.normal(size=(6, cell.state_size)))
  for name, rank in STOCHASTIC + DETERMINISTIC:
    est = make_estimator(name, cell, rank)
    state = est.init(6)
    for _ in range(3):
      state = est.step(state, x, rng(9))
    rows = est.per_example_gradient(state, dl)
    g = est.influence(state)
    assert rows.shape == (6, cell.hhat_size, cell.kernel_columns), name
    assert g.shape == (6, cell.state_size, cell.hhat_size, cell.kernel_columns), name
    theirs = est.gradient(state, dl)[0].numpy()
    assert np.max(np.abs(theirs)) > 1e-3
    np.testing.assert_allclose(theirs, tf.reduce_mean(rows, axis=0).numpy(), rtol=1e-12,
                               atol=1e-15, err_msg=name)
    np.testing.assert_allclose(rows.numpy(), tf.einsum("bs,bsap->bap", dl, g).numpy(),
                               rtol=1e-12, atol=1e-15, err_msg=name)


# ----------------------------------------------------------------------------- statistics
class Problem:
  """Fixed weights and a fixed sequence; exact RTRL and batched estimates of Σ_t dL_t/dW."""

  def __init__(self, name, units, steps, seed, input_dim=3, stddev=0.5):
    self.cell = make_cell(name, units=units, input_dim=input_dim, seed=seed, stddev=stddev)
    self.steps = steps
    self.xs = one_hot_sequence(steps, input_dim, seed)
    self.gs = np.random.RandomState(seed + 1).normal(size=(steps, self.cell.state_size))
    self.exact = self.accumulated(make_estimator("rtrl", self.cell), rows=1)()[0].numpy()

  def accumulated(self, est, rows):
    """A tf.function returning the per-row Σ_t estimates [rows, a, k·n] (uses SHARED)."""
    xs = tf.constant(np.repeat(self.xs[:, None], rows, axis=1))
    gs = tf.constant(np.repeat(self.gs[:, None], rows, axis=1))
    cell = self.cell

    @tf.function
    def run():
      state = est.init(rows)
      acc = tf.zeros([rows, cell.hhat_size, cell.kernel_columns], cell.compute_dtype)
      for t in tf.range(self.steps):
        state = est.step(state, xs[t], SHARED)
        acc += est.per_example_gradient(state, gs[t])
      return acc

    return run

  def draws(self, name, rank, rows, key, batches=K):
    """(batch means [batches, a, kn], per-draw squared errors [batches·rows])."""
    run = self.accumulated(make_estimator(name, self.cell, rank), rows)
    means, sq = [], []
    for _ in streams(key, batches):
      acc = run().numpy()
      means.append(acc.mean(axis=0))
      sq.append(np.sum((acc - self.exact) ** 2, axis=(1, 2)))
    return np.stack(means), np.concatenate(sq)


def check_unbiased(problem, name, rank, rows, key):
  means, sq = problem.draws(name, rank, rows, key)
  exact = problem.exact
  mean = means.mean(axis=0)
  se = means.std(axis=0, ddof=1) / np.sqrt(len(means))
  z = (mean - exact) / np.sqrt(se ** 2 + (1e-12 * np.max(np.abs(exact))) ** 2)
  worst = np.max(np.abs(z))
  # power: the error of the mean is far below the spread of one estimate, which is
  # itself not negligible (the estimator really is random)
  spread = np.sqrt(np.mean(sq) / exact.size)
  error = np.sqrt(np.mean((mean - exact) ** 2))
  scale = np.sqrt(np.mean(exact ** 2))
  msg = (f"{name}: max|z|={worst:.2f}, mean error {error:.3g}, single-draw spread "
         f"{spread:.3g}, |g| {scale:.3g}")
  print(msg)
  assert worst < Z_MAX, msg
  assert spread > 1e-3 * scale, msg
  assert error < 0.05 * spread, msg
  return worst


PROBLEMS = {}   # built once per module run (the exact RTRL gradient is reused)


@pytest.mark.parametrize("name,rank", STOCHASTIC)
def test_unbiased_rhn(name, rank):
  problem = PROBLEMS.get("rhn") or PROBLEMS.setdefault("rhn", Problem("rhn", 3, 24, seed=10))
  check_unbiased(problem, name, rank, rows=2048, key=1000 + len(name))


@pytest.mark.parametrize("cell_name", [n for n in NAMES if n != "rhn"])
@pytest.mark.parametrize("name,rank", STOCHASTIC)
def test_unbiased_other_cells(cell_name, name, rank):
  problem = PROBLEMS.get(cell_name) or PROBLEMS.setdefault(
      cell_name, Problem(cell_name, 3, 20, seed=20))
  check_unbiased(problem, name, rank, rows=1024, key=2000 + len(name))


@pytest.mark.slow
@pytest.mark.parametrize("cell_name", NAMES)
@pytest.mark.parametrize("name,rank", STOCHASTIC + (("ok", 4),))
def test_unbiased_slow(cell_name, name, rank):
  """The same claim, larger: n = 5, 40 steps, 32 × 2048 draws."""
  key = "slow_" + cell_name
  problem = PROBLEMS.get(key) or PROBLEMS.setdefault(key, Problem(cell_name, 5, 40, seed=30))
  check_unbiased(problem, name, rank, rows=2048, key=3000 + 10 * len(name) + (rank or 0))


# ----------------------------------------------------------------------------- variance
def relative_variances(units, steps, rows, batches, seed, rank):
  problem = Problem("rhn", units, steps, seed=seed)
  norm = np.sum(problem.exact ** 2)
  out = {}
  for i, (name, r) in enumerate((("ok", rank), ("kf_avg", rank), ("kf", None), ("uoro", None),
                                 ("ok", 1))):
    _, sq = problem.draws(name, r, rows, key=5000 + 17 * i, batches=batches)
    rv = sq / norm
    out[f"{name}({r})" if r else name] = (rv.mean(), rv.std(ddof=1) / np.sqrt(rv.size))
  return out


def check_ordering(out, rank):
  ok, avg, kf, uoro, ok1 = (out[k][0] for k in (f"ok({rank})", f"kf_avg({rank})", "kf",
                                                "uoro", "ok(1)"))
  msg = ("relative variances E|g'-g|^2/|g|^2: "
         + ", ".join(f"{k}={m:.4g}±{s:.2g}" for k, (m, s) in out.items())
         + f"; ratios kf_avg/ok={avg / ok:.3g}, kf/kf_avg={kf / avg:.3g}, "
         f"uoro/kf={uoro / kf:.3g}, kf/ok(1)={kf / ok1:.3g}")
  print(msg)
  # every difference must be significant, not just the point estimates ordered
  se = {k: s for k, (m, s) in out.items()}
  assert ok + 3 * se[f"ok({rank})"] < avg - 3 * se[f"kf_avg({rank})"], msg
  assert avg + 3 * se[f"kf_avg({rank})"] < kf - 3 * se["kf"], msg
  assert uoro > 3 * kf, msg
  assert ok1 <= kf * 1.05, msg      # OK(1) is never worse than KF (up to sampling error)
  assert ok > 0, msg
  return msg


def test_variance_ordering():
  out = relative_variances(units=8, steps=24, rows=1024, batches=4, seed=40, rank=2)
  check_ordering(out, 2)


@pytest.mark.slow
def test_variance_ordering_slow():
  out = relative_variances(units=16, steps=50, rows=2048, batches=8, seed=41, rank=4)
  check_ordering(out, 4)


# ----------------------------------------------------------------------------- protocol
ALL = DETERMINISTIC + STOCHASTIC


@pytest.mark.parametrize("name,rank", ALL)
def test_reset_zeroes_masked_rows(name, rank):
  cell = make_cell("lstm", seed=50)
  est = make_estimator(name, cell, rank)
  rs = np.random.RandomState(50)
  state = est.init(4)
  g = rng(51)
  for _ in range(3):
    state = est.step(state, tf.constant(rs.normal(size=(4, cell.input_dim))), g)
  mask = tf.constant([True, False, True, False])
  new = est.reset(state, mask)
  assert type(new) is type(state)
  for field, old_value, new_value in zip(state._fields, state, new):
    old_value, new_value = old_value.numpy(), new_value.numpy()
    assert new_value.dtype == old_value.dtype and new_value.shape == old_value.shape
    assert np.all(new_value[[0, 2]] == 0), field
    np.testing.assert_array_equal(new_value[[1, 3]], old_value[[1, 3]], err_msg=field)
    # the reset did something (OK's kept may legitimately be 0)
    if field != "kept":
      assert np.any(old_value[[0, 2]] != 0), field
  # a reset stream restarts: its next step equals a fresh stream's first step
  x = tf.constant(rs.normal(size=(4, cell.input_dim)))
  after = est.step(new, x, rng(52))
  fresh = est.step(est.init(4), x, rng(52))
  np.testing.assert_allclose(after.h.numpy()[[0, 2]], fresh.h.numpy()[[0, 2]], atol=1e-15)
  if name != "uoro":   # the first step is exact for these
    np.testing.assert_allclose(est.influence(after).numpy()[[0, 2]],
                               est.influence(fresh).numpy()[[0, 2]], atol=1e-13)


@pytest.mark.parametrize("name,rank", (("rtrl", None), ("kf", None), ("kf_avg", 2),
                                       ("uoro", None), ("snap1", None)))
def test_float32_matches_float64(name, rank):
  """Same weights, same generator keys: float32 and float64 agree to ~1e-4 relative.

  (kf and uoro draw their signs from integers, so the same key gives the same signs in
  both precisions; OK's SVD sign conventions may differ, so it is only checked finite.)
  """
  c64 = make_cell("rhn", dtype="float64", seed=60)
  c32 = make_cell("rhn", dtype="float32", seed=60)
  c32.kernel.assign(c64.kernel.numpy().astype(np.float32))
  e64, e32 = make_estimator(name, c64, rank), make_estimator(name, c32, rank)
  rs = np.random.RandomState(61)
  s64, s32 = e64.init(3), e32.init(3)
  g64, g32 = rng(62), rng(62)
  for _ in range(4):
    x = rs.normal(size=(3, c64.input_dim))
    dl = rs.normal(size=(3, c64.state_size))
    s64 = e64.step(s64, tf.constant(x), g64)
    s32 = e32.step(s32, tf.constant(x, tf.float32), g32)
    assert s32.h.dtype == tf.float32 and s64.h.dtype == tf.float64
    grad64 = e64.gradient(s64, tf.constant(dl))[0].numpy()
    grad32 = e32.gradient(s32, tf.constant(dl, tf.float32))[0]
    assert grad32.dtype == tf.float32
    assert rel(grad32.numpy().astype(np.float64), grad64) < 1e-4
    assert rel(e32.influence(s32).numpy().astype(np.float64),
               e64.influence(s64).numpy()) < 1e-4


def test_ok_float32_finite():
  cell = make_cell("rhn", dtype="float32", seed=63)
  est = make_estimator("ok", cell, 2)
  state = est.init(4)
  g = rng(64)
  rs = np.random.RandomState(64)
  for t in range(10):
    mask = tf.constant([t == 5, False, False, True])
    state = est.reset(state, mask)
    state = est.step(state, tf.constant(rs.normal(size=(4, 3)), tf.float32), g)
    for field in state:
      assert np.all(np.isfinite(field.numpy()))


@pytest.mark.parametrize("name,rank", ALL)
def test_tf_function_does_not_retrace(name, rank):
  cell = make_cell("rhn", seed=70)
  est = make_estimator(name, cell, rank)
  g = rng(71)

  @tf.function
  def fn(state, x, dl):
    state = est.step(state, x, g)
    return state, est.gradient(state, dl)

  rs = np.random.RandomState(72)
  state = est.init(3)
  grads = []
  for _ in range(5):
    x = tf.constant(rs.normal(size=(3, cell.input_dim)))
    dl = tf.constant(rs.normal(size=(3, cell.state_size)))
    state, grad = fn(state, x, dl)
    grads.append(grad[0].numpy())
  assert fn.experimental_get_tracing_count() == 1
  assert not np.allclose(grads[0], grads[-1])   # the inputs really changed
  # and the traced step agrees with the eager one
  eager_state = est.step(est.init(3), x, rng(73))
  traced_state, _ = fn(est.init(3), x, dl)
  np.testing.assert_allclose(traced_state.h.numpy(), eager_state.h.numpy(), atol=1e-15)


def test_get_errors():
  cell = make_cell("rhn")
  for name in ("bptt", "tbptt"):     # tbptt is a method, not an estimator
    with pytest.raises(ValueError, match="unknown estimator"):
      estimators.get(name, cell)
  with pytest.raises(ValueError, match="rank"):
    estimators.get("ok", cell)
  with pytest.raises(ValueError, match="rank"):
    estimators.get("kf_avg", cell)
  for name, method in estimators.ESTIMATORS.items():
    if not method.takes_rank and method.fixed_rank is None:
      with pytest.raises(ValueError, match="rank"):
        estimators.get(name, cell, rank=2)
  with pytest.raises(ValueError, match="rank"):
    estimators.get("kf", cell, rank=2)
  for name in ("ok", "kf_avg"):
    for bad in (-1, 0):
      with pytest.raises(ValueError, match="rank"):
        estimators.get(name, cell, rank=bad)
  unbuilt = cells.get("rhn", 3)
  with pytest.raises(ValueError, match="build"):
    estimators.get("rtrl", unbuilt)
  # the valid ones
  assert isinstance(estimators.get("kf", cell), estimators.KF)
  assert estimators.get("kf", cell, rank=1).rank == 1
  assert isinstance(estimators.get("ok", cell, rank=3), estimators.OK)
  assert estimators.get("kf_avg", cell, rank=3).rank == 3
  assert isinstance(estimators.get("uoro", cell), estimators.UORO)
  assert isinstance(estimators.get("rtrl", cell), estimators.RTRL)
  assert not estimators.get("rtrl", cell).stochastic
  assert isinstance(estimators.get("snap1", cell), estimators.SnAp1)
  assert not estimators.get("snap1", cell).stochastic


def test_ok_diagnostics():
  rank = 3
  cell = make_cell("rhn", units=4, seed=80)
  est = make_estimator("ok", cell, rank)
  rs = np.random.RandomState(80)
  state = est.init(16)
  assert state.kept.dtype == tf.int32 and state.variance.dtype == tf.float64
  g = rng(81)
  seen_kept, seen_var = set(), []
  for _ in range(12):
    state = est.step(state, tf.constant(rs.normal(size=(16, cell.input_dim))), g)
    kept, var = state.kept.numpy(), state.variance.numpy()
    assert kept.shape == (16,) and var.shape == (16,)
    assert np.all((kept >= 0) & (kept <= rank - 1)), kept
    assert np.all(np.isfinite(var)) and np.all(var >= 0), var
    seen_kept.update(kept.tolist())
    seen_var.append(var)
  assert np.max(seen_var[-1]) > 0       # after r steps the reduction is really random
  assert np.all(seen_var[0] < 1e-20)    # the first step (rank 1) is exact
  # the diagnostics are OK's own: the states KF and r-KF-RTRL-AVG share carry none
  for name, r in (("kf", None), ("kf_avg", 2)):
    assert make_estimator(name, cell, r).init(2)._fields == ("h", "u", "a")



# ----------------------------------------------------------------------------- registry
def test_registry_lists_every_method_once():
  """Every module's method, once, ordered by ``order``; the estimators are the methods that
  are Estimators; labels, orders and colours follow the registry."""
  methods = list(estimators.METHODS.values())
  assert [m.order for m in methods] == sorted(m.order for m in methods)
  assert len({m.order for m in methods}) == len(methods)
  for name, method in estimators.METHODS.items():
    assert method.name == name and issubclass(method, estimators.Method)
    assert method.__module__ == f"ok_tf.estimators.{method.__module__.split('.')[-1]}"
    assert getattr(estimators, method.__name__) is method
  assert list(estimators.ESTIMATORS) == [n for n, m in estimators.METHODS.items()
                                         if issubclass(m, estimators.Estimator)]
  assert estimators.default() == next(iter(estimators.METHODS))
  names = list(estimators.METHODS)
  assert [estimators.order(n) for n in names + ["bptt"]] == list(range(len(names) + 1))
  colours = [estimators.color(n) for n in names]
  assert len(set(colours)) == len(colours) and estimators.color("bptt") == "C7"
  for name, method in estimators.ESTIMATORS.items():    # hyperparameters reach __init__
    for hp in method.hyperparameters:
      assert isinstance(hp.default, hp.type)
      assert hp.name in inspect.signature(method.__init__).parameters
      assert estimators.hyperparameters(name, {f"{name}_{hp.name}": hp.default}) == {
          **{h.name: h.default for h in method.hyperparameters}}


def test_hyperparameters_reach_the_estimator():
  cell = make_cell("rhn")
  assert estimators.get("ok", cell, rank=2, balance=False).balance is False
  assert estimators.get("uoro", cell, eps=1e-5).eps == 1e-5
  assert estimators.hyperparameters("uoro", {"uoro_eps": 1e-3}) == {"eps": 1e-3}
  with pytest.raises(TypeError, match="no argument"):
    estimators.get("uoro", cell, balance=False)


def test_labels_and_rank_rule():
  label = estimators.label
  assert label("ok", 8) == "ok (r=8)" and label("ok", 16.0) == "ok (r=16)"
  assert label("kf_avg", 4, 25) == "kf_avg (r=4)"
  assert label("tbptt", 16, 25) == "tbptt (T=25)" and label("tbptt") == "tbptt"
  assert label("kf", 1) == "kf" and label("snap1", None, 5) == "snap1"
  assert label("ok") == "ok" and label("sgd", 3) == "sgd"
  m = estimators.METHODS
  assert m["ok"].rank_for(3) == 3 and m["kf"].rank_for(None) == 1 and m["kf"].rank_for(1) == 1
  assert m["uoro"].rank_for(None) is None and m["tbptt"].rank_for(None) is None
  for name, bad in (("ok", None), ("ok", 0), ("kf_avg", -1), ("kf", 2), ("snap1", 2),
                    ("tbptt", 4)):
    with pytest.raises(ValueError, match="--rank"):
      m[name].rank_for(bad, "--rank")


@pytest.mark.parametrize("cell_name", NAMES)
def test_cost_state_bytes_are_the_state(cell_name):
  """Each cost model's state bytes are exactly those of est.init(B); flops are positive."""
  for dtype in ("float64", "float32"):
    cell = make_cell(cell_name, units=3, input_dim=5, dtype=dtype)
    dims = estimators.Dims.of(cell)
    assert dims == estimators.Dims.of_config(cell_name, 3, 5)
    for name, rank in STOCHASTIC + DETERMINISTIC:
      est = make_estimator(name, cell, rank)
      state = est.init(7)
      held = sum(t.numpy().nbytes for t in tf.nest.flatten(state))
      cost = est.cost(dims, rank, batch=7, dtype=dtype)
      assert cost.state_bytes == held, (name, cost, held)
      assert cost.flops > 0
  tb = estimators.METHODS["tbptt"].cost(dims, batch=2, truncation=4, dtype="float32")
  assert tb.state_bytes == 2 * 5 * dims.state * 4
  # the orders of growth of docs/algorithms.md §8 (S = n, a ≈ n at large n)
  big = [estimators.Dims.of_config("rhn", n, 4) for n in (1024, 2048)]
  for name, rank, order in (("rtrl", None, 4), ("ok", 8, 3), ("kf", None, 3),
                            ("uoro", None, 2), ("snap1", None, 2), ("tbptt", None, 2)):
    m = estimators.METHODS[name]
    f = [m.cost(d, rank, truncation=25).flops for d in big]
    assert round(np.log2(f[1] / f[0])) == order, name


# ----------------------------------------------------------------------------- SnAp-1
def pattern(cell):
  """SnAp-1's pattern as a [S, 1, k·n] mask: G[s, i, g·n + j] is kept iff j = unit(s)."""
  s = np.arange(cell.state_size)[:, None, None]
  c = np.arange(cell.kernel_columns)[None, None, :]
  return (c % cell.units == s % cell.units).astype(np.float64)


@pytest.mark.parametrize("name,fused", [(n, f) for n in NAMES for f in (False, True)])
def test_snap1_is_the_projected_recursion(name, fused):
  """G'_t = P(H_t G'_{t−1} + ĥ_t ⊗ D_t), P the projection onto SnAp-1's pattern, computed
  densely from the cell's linearisation; by TensorFlow's ops and by the XLA-fused update
  (which large states take)."""
  steps, batch = 6, 3
  cell = make_cell(name, seed=90)
  est = make_estimator("snap1", cell)
  if fused:
    est.fuse_min_entries = 0
  rs = np.random.RandomState(90)
  state, dense = est.init(batch), np.zeros((batch, cell.state_size, cell.hhat_size,
                                            cell.kernel_columns))
  mask = pattern(cell)
  for _ in range(steps):
    x = tf.constant(rs.normal(size=(batch, cell.input_dim)))
    st = cell.linearize(x, state.h)
    d = cell.dense_d(st.gates).numpy()
    dense = np.einsum("bst,btap->bsap", st.jacobian.numpy(), dense)
    dense = mask * (dense + st.hhat.numpy()[:, None, :, None] * d[:, :, None, :])
    state = est.step(state, x)
    np.testing.assert_array_equal(state.h.numpy(), st.state.numpy())
    assert rel(est.influence(state).numpy(), dense) < 1e-13
  assert np.max(np.abs(dense)) > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_snap1_equals_rtrl_without_recurrent_weights(name):
  """With W_h = 0, H_t has no entries between units (diagonal; the LSTM's 2 × 2 blocks of
  (c_j, h_j)), so SnAp-1 keeps everything RTRL has: it is exact at every step."""
  steps, batch = 8, 3
  cell = zero_recurrent_weights(make_cell(name, seed=91))
  rs = np.random.RandomState(91)
  exact, snap = make_estimator("rtrl", cell), make_estimator("snap1", cell)
  s_exact, s_snap = exact.init(batch), snap.init(batch)
  for t in range(steps):
    x = tf.constant(rs.normal(size=(batch, cell.input_dim)))
    dl = tf.constant(rs.normal(size=(batch, cell.state_size)))
    s_exact, s_snap = exact.step(s_exact, x), snap.step(s_snap, x)
    assert rel(snap.influence(s_snap).numpy(), exact.influence(s_exact).numpy()) < 1e-12, t
    ge, gs = exact.gradient(s_exact, dl)[0].numpy(), snap.gradient(s_snap, dl)[0].numpy()
    assert rel(gs, ge) < 1e-12, t
  assert np.max(np.abs(exact.influence(s_exact).numpy())) > 1e-2


@pytest.mark.parametrize("name,stddev", [(n, s) for n in NAMES for s in (0.1, 0.5)])
def test_snap1_bias_against_rtrl(name, stddev):
  """SnAp-1 is biased by design: with recurrent weights its Σ_t dL_t/dW differs from exact
  RTRL's. Reported (pytest -s): relative error ‖ĝ − g‖/‖g‖ and cosine of the gradient
  summed over 24 steps (n = 3, V = 3, W ~ N(0, stddev²), one-hot inputs)."""
  problem = Problem(name, 3, 24, seed=92, stddev=stddev)
  exact = problem.exact
  snap = problem.accumulated(make_estimator("snap1", problem.cell), rows=1)()[0].numpy()
  err = np.linalg.norm(snap - exact) / np.linalg.norm(exact)
  cos = np.sum(snap * exact) / (np.linalg.norm(snap) * np.linalg.norm(exact))
  print(f"snap1 bias, {name}, W ~ N(0, {stddev}²): relative error {err:.3g}, "
        f"cosine {cos:.4f}")
  assert 1e-4 < err < 1.0 and cos > 0.5


# ----------------------------------------------------------------------------- sequences
def readout_problem(name="rhn", steps=7, batch=4, vocab=5, seed=100):
  """A cell, a softmax readout W_out and its per-stream cross-entropy, inputs and targets."""
  cell = make_cell(name, units=4, input_dim=3, seed=seed)
  rs = np.random.RandomState(seed)
  w_out = tf.Variable(rs.normal(size=(cell.units, vocab)))
  xs = tf.constant(rs.normal(size=(steps, batch, cell.input_dim)))
  ys = tf.constant(rs.randint(vocab, size=(steps, batch)))

  def loss_fn(s, y):
    logits = tf.matmul(cell.output(s), w_out)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)

  return cell, w_out, xs, ys, loss_fn


@pytest.mark.parametrize("name", NAMES)
def test_run_sequence_with_rtrl_is_bptt(name):
  """Exact RTRL over a sequence in one call: Σ_t ĝ_t is BPTT's gradient of Σ_t mean_b L_t,
  and the readout's summed gradient, the final state and the losses are autodiff's."""
  cell, w_out, xs, ys, loss_fn = readout_problem(name)
  est = make_estimator("rtrl", cell)
  res = estimators.run_sequence(est, est.init(4), xs, loss_fn, ys, variables=[w_out])
  with tf.GradientTape() as tape:
    s, total, losses = cell.zero_state(4), 0.0, []
    for t in range(xs.shape[0]):
      s = cell.step(xs[t], s)
      losses.append(loss_fn(s, ys[t]))
      total += tf.reduce_mean(losses[-1])
  bptt, readout = tape.gradient(total, [cell.kernel, w_out])
  assert rel(res.grads[0].numpy(), bptt.numpy()) < 1e-12
  assert rel(res.readout_grads[0].numpy(), readout.numpy()) < 1e-12
  np.testing.assert_allclose(res.state.h.numpy(), s.numpy(), rtol=0, atol=1e-14)
  np.testing.assert_allclose(res.losses.numpy(), np.stack(losses), rtol=1e-14)


@pytest.mark.parametrize("name,rank", ALL)
def test_run_sequence_is_the_loop_of_steps(name, rank):
  """The compiled loop equals est.step / est.gradient called step by step with the same
  generator state, and a second call with the same arguments is not traced again."""
  cell, w_out, xs, ys, loss_fn = readout_problem(seed=101)
  est = make_estimator(name, cell, rank)
  traced = []

  def counted(s, y):
    traced.append(1)
    return loss_fn(s, y)

  rng_loop, rng_call = rng(102), rng(102)
  state, total = est.init(4), np.zeros(cell.kernel.shape)
  for t in range(xs.shape[0]):
    state = est.step(state, xs[t], rng_loop)
    with tf.GradientTape() as tape:
      tape.watch(state.h)
      loss = tf.reduce_sum(loss_fn(state.h, ys[t]))
    total += est.gradient(state, tape.gradient(loss, state.h))[0].numpy()
  res = estimators.run_sequence(est, est.init(4), xs, counted, ys, rng=rng_call)
  assert rel(res.grads[0].numpy(), total) < 1e-10
  for got, want in zip(res.state, state):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-13)
  assert res.readout_grads == []
  calls = len(traced)
  estimators.run_sequence(est, res.state, xs, counted, ys, rng=rng_call)
  assert len(traced) == calls   # compiled once


def test_run_sequence_needs_a_generator_for_stochastic_estimators():
  cell, _, xs, ys, loss_fn = readout_problem(seed=103)
  est = make_estimator("kf", cell)
  with pytest.raises(ValueError, match="pass rng="):
    estimators.run_sequence(est, est.init(4), xs, loss_fn, ys)


def test_run_sequence_traces_a_bound_method_once():
  """A readout's method as loss_fn (a new bound-method object at every access) does not
  make every call trace the loop anew."""
  cell, w_out, xs, ys, loss_fn = readout_problem(seed=104)
  traced = []

  class Readout:
    def loss(self, s, y):
      traced.append(1)
      return loss_fn(s, y)

  readout, est = Readout(), make_estimator("snap1", cell)
  first = estimators.run_sequence(est, est.init(4), xs, readout.loss, ys, variables=[w_out])
  calls = len(traced)
  second = estimators.run_sequence(est, est.init(4), xs, readout.loss, ys, variables=[w_out])
  assert len(traced) == calls
  np.testing.assert_array_equal(first.grads[0].numpy(), second.grads[0].numpy())
