"""Tests of the cells (ok_tf/cells/, every cell of the registry): forward pass, linearisation (ĥ_t, D_t, H_t), init, config.

Exactness checks run in float64 against autodiff (tf.GradientTape) and against a numpy
re-implementation of each cell's equations of docs/algorithms.md §1.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ok_tf import cells
from ok_tf import kronecker

import toolkit

NAMES = tuple(cells.CELLS)       # every registered cell
V = 3  # input size
N = 4  # units
B = 5  # batch


def make_cell(name, units=N, input_dim=V, **kwargs):
  return toolkit.make_cell(name, units, input_dim, **kwargs)


def random_inputs(cell, seed=1, batch=B, dtype=np.float64):
  """A random input x [B, V] and a random non-zero state s [B, S]."""
  rs = np.random.RandomState(seed)
  x = rs.normal(size=(batch, cell.input_dim)).astype(dtype)
  s = (0.8 * rs.normal(size=(batch, cell.state_size))).astype(dtype)
  return tf.constant(x), tf.constant(s)


rel_err = toolkit.rel_err


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", NAMES)
def test_linearize_state_matches_call(name):
  cell = make_cell(name)
  x, s = random_inputs(cell)
  step = cell.linearize(x, s)
  expected = cell.step(x, s).numpy()
  assert step.state.shape == (B, cell.state_size)
  np.testing.assert_allclose(step.state.numpy(), expected, rtol=0, atol=1e-14)
  # ĥ_t = [x_t, h_{t-1}, 1]
  hhat = np.concatenate([x.numpy(), s.numpy()[:, cell.state_size - N:], np.ones((B, 1))], -1)
  np.testing.assert_array_equal(step.hhat.numpy(), hhat)
  assert step.hhat.shape == (B, cell.hhat_size)
  assert step.gates.shape == (B, cell.state_size, cell.num_gates)
  assert step.jacobian.shape == (B, cell.state_size, cell.state_size)
  # the state actually moves (the check above is not vacuous)
  assert np.max(np.abs(expected - s.numpy())) > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_state_jacobian_matches_autodiff(name):
  cell = make_cell(name)
  x, s = random_inputs(cell, seed=2)
  with tf.GradientTape() as tape:
    tape.watch(s)
    out = cell.step(x, s)
  expected = tape.batch_jacobian(out, s).numpy()
  got = cell.linearize(x, s).jacobian.numpy()
  assert np.max(np.abs(expected)) > 1e-2
  assert rel_err(got, expected) < 1e-12, rel_err(got, expected)


@pytest.mark.parametrize("name", NAMES)
def test_unit_blocks_are_those_of_the_jacobian(name):
  """linearize_blocks: the same step, and blocks[p, q, j] = H_t[p·n + j, q·n + j] of the
  dense H_t, without forming it (and the base class's default from the dense direct part
  agrees with each cell's own)."""
  cell = make_cell(name)
  x, s = random_inputs(cell, seed=3)
  full, local = cell.linearize(x, s), cell.linearize_blocks(x, s)
  for a, b in zip((full.state, full.hhat, full.gates), local[:3]):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  m = cell.state_multiplier
  h = full.jacobian.numpy().reshape(B, m, N, m, N)
  want = np.einsum("bpjqj->bpqj", h)
  assert local.blocks.shape == (B, m, m, N)
  np.testing.assert_allclose(local.blocks.numpy(), want, rtol=0, atol=1e-15)
  assert np.max(np.abs(want)) > 1e-2
  z = tf.matmul(cell.hhat(x, s), cell.kernel)
  new_state, aux = cell._gates_and_state(z, s)  # pylint: disable=protected-access
  own = cell._direct_blocks(aux, s, new_state)  # pylint: disable=protected-access
  default = cells.KroneckerCell._direct_blocks(cell, aux, s, new_state)  # pylint: disable=protected-access
  np.testing.assert_array_equal(0.0 if own is None else own.numpy(), default.numpy())


@pytest.mark.parametrize("name", NAMES)
def test_immediate_jacobian_is_hhat_kron_d(name):
  """∂s_t/∂W with s_{t-1} held fixed equals ĥ_t ⊗ D_t (parameter axis ordered like W)."""
  cell = make_cell(name)
  x, s = random_inputs(cell, seed=3)
  with tf.GradientTape() as tape:
    out = cell.step(x, s)
  jac = tape.jacobian(out, cell.kernel).numpy()     # [B, S, a, k·n]
  assert jac.shape == (B, cell.state_size, cell.hhat_size, cell.kernel_columns)
  step = cell.linearize(x, s)
  dense = cell.dense_d(step.gates)
  assert dense.shape == (B, cell.state_size, cell.kernel_columns)
  kron = tf.einsum("ba,bsp->bsap", step.hhat, dense).numpy()
  assert np.max(np.abs(jac)) > 1e-2
  assert rel_err(kron, jac) < 1e-12, rel_err(kron, jac)


@pytest.mark.parametrize("name", NAMES)
def test_dense_d_structure(name):
  """D_t[s, g·n + j] = d_t[s, g] δ(j, s mod n), zero elsewhere."""
  cell = make_cell(name)
  x, s = random_inputs(cell, seed=4)
  step = cell.linearize(x, s)
  gates = step.gates.numpy()
  dense = cell.dense_d(step.gates).numpy()
  expected = np.zeros_like(dense)
  for si in range(cell.state_size):
    for g in range(cell.num_gates):
      expected[:, si, g * N + si % N] = gates[:, si, g]
  np.testing.assert_array_equal(dense, expected)


@pytest.mark.parametrize("name", NAMES)
def test_d_diagonals_hold_exactly_d(name):
  """d_diagonals holds d_t[s, g] at row s, column g·n + s mod n, on k + S/n − 1 diagonals."""
  cell = make_cell(name)
  x, s = random_inputs(cell, seed=5)
  step = cell.linearize(x, s)
  diag = cell.d_diagonals(step.gates)
  k, m = cell.num_gates, cell.state_multiplier
  assert diag.offsets == tuple(o * N for o in range(-(m - 1), k))
  assert (diag.rows, diag.cols) == (cell.state_size, cell.kernel_columns)
  # S·k non-zeros in all: every position of every diagonal is one of D_t's
  assert sum(v.shape[-1] for v in diag.values) == cell.state_size * k
  gates = step.gates.numpy()
  for o, v in zip(diag.offsets, diag.values):
    rows = np.arange(max(0, -o), max(0, -o) + v.shape[-1])
    # row s of the diagonal at offset o sits in column s + o = g·n + s mod n
    np.testing.assert_array_equal(v.numpy(), gates[:, rows, (rows + o) // N])
  # dense_d lays these out (test_dense_d_structure checks it against D_t's definition)
  np.testing.assert_array_equal(kronecker.diagonals_dense(diag).numpy(),
                                cell.dense_d(step.gates).numpy())


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def test_rhn_equations_against_numpy():
  """docs/algorithms.md §1: c = 2σ(z_c)−1, f = σ(z_f), h = f h + (1−f) c, d_c, d_f, H_t."""
  n = N
  cell = make_cell("rhn", seed=5)
  x, s = random_inputs(cell, seed=5)
  w = cell.kernel.numpy()
  xv, h = x.numpy(), s.numpy()
  hhat = np.concatenate([xv, h, np.ones((B, 1))], axis=-1)
  z = hhat @ w
  z_c, z_f = z[:, :n], z[:, n:]
  c = 2.0 * _sigmoid(z_c) - 1.0
  f = _sigmoid(z_f)
  h_new = f * h + (1.0 - f) * c
  d_c = (1.0 - f) * 2.0 * _sigmoid(z_c) * (1.0 - _sigmoid(z_c))
  d_f = (h - c) * f * (1.0 - f)
  w_hc, w_hf = w[V:V + n, :n], w[V:V + n, n:]
  big_h = np.stack([np.diag(f[b]) + np.diag(d_c[b]) @ w_hc.T + np.diag(d_f[b]) @ w_hf.T
                    for b in range(B)])
  big_d = np.stack([np.concatenate([np.diag(d_c[b]), np.diag(d_f[b])], axis=1)
                    for b in range(B)])
  np.testing.assert_allclose(np.tanh(z_c / 2.0), c, atol=1e-15)  # the identity in §1
  np.testing.assert_allclose(cell.step(x, s).numpy(), h_new, rtol=0, atol=1e-14)
  step = cell.linearize(x, s)
  np.testing.assert_allclose(step.state.numpy(), h_new, rtol=0, atol=1e-14)
  np.testing.assert_allclose(step.gates.numpy(), np.stack([d_c, d_f], -1), rtol=0, atol=1e-14)
  np.testing.assert_allclose(step.jacobian.numpy(), big_h, rtol=0, atol=1e-14)
  np.testing.assert_allclose(cell.dense_d(step.gates).numpy(), big_d, rtol=0, atol=1e-14)
  np.testing.assert_allclose(cell.output(s).numpy(), h)


def test_tanh_and_lstm_equations_against_numpy():
  """The other two cells' forward equations (cell docstrings)."""
  n = N
  tanh = make_cell("tanh", seed=6)
  x, s = random_inputs(tanh, seed=6)
  hhat = np.concatenate([x.numpy(), s.numpy(), np.ones((B, 1))], -1)
  np.testing.assert_allclose(tanh.step(x, s).numpy(), np.tanh(hhat @ tanh.kernel.numpy()),
                             rtol=0, atol=1e-14)

  lstm = make_cell("lstm", seed=7)
  x, s = random_inputs(lstm, seed=7)
  c_prev, h_prev = s.numpy()[:, :n], s.numpy()[:, n:]
  hhat = np.concatenate([x.numpy(), h_prev, np.ones((B, 1))], -1)
  z = hhat @ lstm.kernel.numpy()
  i, f, o = _sigmoid(z[:, :n]), _sigmoid(z[:, n:2 * n]), _sigmoid(z[:, 2 * n:3 * n])
  g = np.tanh(z[:, 3 * n:])
  c = f * c_prev + i * g
  h = o * np.tanh(c)
  np.testing.assert_allclose(lstm.step(x, s).numpy(), np.concatenate([c, h], -1),
                             rtol=0, atol=1e-14)
  np.testing.assert_allclose(lstm.output(s).numpy(), h_prev)


def leaky_cell(alpha, seed=8):
  cell = cells.get("leaky", N, alpha=alpha, dtype="float64",
                   kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed))
  cell.build((None, V))
  return cell


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_leaky_equations_against_numpy(alpha):
  """docs/algorithms.md §1: h_t = (1 − α) h_{t−1} + α tanh(z), D_t = diag(α (1 − tanh² z)),
  H_t = (1 − α) I + D_t W_hᵀ."""
  cell = leaky_cell(alpha)
  x, s = random_inputs(cell, seed=8)
  w, h = cell.kernel.numpy(), s.numpy()
  z = np.concatenate([x.numpy(), h, np.ones((B, 1))], -1) @ w
  d = alpha * (1.0 - np.tanh(z) ** 2)
  big_h = np.stack([(1.0 - alpha) * np.eye(N) + np.diag(d[b]) @ w[V:V + N].T for b in range(B)])
  step = cell.linearize(x, s)
  np.testing.assert_allclose(step.state.numpy(), (1.0 - alpha) * h + alpha * np.tanh(z),
                             rtol=0, atol=1e-14)
  np.testing.assert_allclose(step.gates.numpy()[:, :, 0], d, rtol=0, atol=1e-14)
  np.testing.assert_allclose(step.jacobian.numpy(), big_h, rtol=0, atol=1e-14)
  blocks = cell.linearize_blocks(x, s).blocks.numpy()[:, 0, 0]
  np.testing.assert_allclose(blocks, np.diagonal(big_h, axis1=1, axis2=2), rtol=0, atol=1e-14)


def test_leaky_cell_at_alpha_one_is_the_tanh_cell():
  leaky, tanh = leaky_cell(1.0, seed=9), make_cell("tanh", seed=9)
  tanh.kernel.assign(leaky.kernel)
  x, s = random_inputs(leaky, seed=9)
  one, other = leaky.linearize(x, s), tanh.linearize(x, s)
  for a, b in zip(one, other):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-15)


def test_leaky_alpha_is_checked_and_kept():
  for bad in (0.0, -0.5, 1.5):
    with pytest.raises(ValueError, match="alpha must be in"):
      cells.get("leaky", 4, alpha=bad)
  cell = cells.get("leaky", 4, alpha=0.25)
  clone = keras.layers.deserialize(keras.layers.serialize(cell))
  assert type(clone) is type(cell) and clone.alpha == 0.25
  assert cells.get("leaky", 4).alpha == 0.5              # the documented default
  assert cells.hyperparameters("leaky", {"leaky_alpha": 0.25}) == {"alpha": 0.25}


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name,k,mult", [("rhn", 2, 1), ("tanh", 1, 1), ("lstm", 4, 2),
                                         ("leaky", 1, 1)])
def test_shapes(name, k, mult):
  n, v = 5, 7
  cell = make_cell(name, units=n, input_dim=v)
  assert cell.kernel.shape == (v + n + 1, k * n)
  assert cell.hhat_size == v + n + 1
  assert cell.kernel_columns == k * n
  assert cell.num_gates == k
  assert cell.state_size == mult * n
  assert cell.output_size == n
  assert cell.zero_state(3).shape == (3, mult * n)
  assert cell.trainable_variables[0] is cell.kernel and len(cell.trainable_variables) == 1
  # build also accepts a shape
  cell2 = cells.get(name, n)
  cell2.build((None, v))
  assert cell2.kernel.shape == (v + n + 1, k * n)


@pytest.mark.parametrize("name", NAMES)
def test_default_init_is_normal_001(name):
  keras.utils.set_random_seed(1234)
  n, v = 64, 64
  cell = cells.get(name, n)
  cell.build((None, v))
  w = cell.kernel.numpy().astype(np.float64).ravel()
  count = w.size
  std = w.std()
  # sample std of N(0, σ²): standard error σ/√(2N); the mean: σ/√N
  se_std = 0.01 / np.sqrt(2 * count)
  assert abs(std - 0.01) < 5 * se_std, (std, se_std)
  assert abs(w.mean()) < 5 * 0.01 / np.sqrt(count), w.mean()
  # normal, not uniform: kurtosis ≈ 3 (uniform: 1.8)
  kurt = np.mean((w - w.mean()) ** 4) / std ** 4
  assert abs(kurt - 3.0) < 0.3, kurt


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
  cell = cells.get(name, 6, dtype="float64",
                   kernel_initializer=keras.initializers.RandomNormal(stddev=0.5))
  config = cell.get_config()
  assert config["units"] == 6
  clone = type(cell).from_config(config)
  assert type(clone) is type(cell)
  assert clone.get_config() == config
  assert clone.units == 6
  clone.build((None, V))
  assert clone.kernel.dtype == tf.float64
  # the initialiser survives (stddev 0.5, not the default 0.01)
  big = type(cell).from_config(dict(config, units=32, name="big"))
  big.build((None, 32))
  assert 0.4 < float(np.std(big.kernel.numpy())) < 0.6
  # generic Keras deserialisation through the registered name
  again = keras.layers.deserialize(keras.layers.serialize(cell))
  assert type(again) is type(cell) and again.get_config() == config


def test_unknown_cell_raises():
  with pytest.raises(ValueError, match="unknown cell"):
    cells.get("gru", 4)
  with pytest.raises(ValueError):
    cells.get("rhn", 0)


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_float64(name):
  c64 = make_cell(name, dtype="float64", seed=8)
  c32 = make_cell(name, dtype="float32", seed=8)
  c32.kernel.assign(c64.kernel.numpy().astype(np.float32))
  x, s = random_inputs(c64, seed=8)
  x32, s32 = tf.cast(x, tf.float32), tf.cast(s, tf.float32)
  s64_step, s32_step = c64.linearize(x, s), c32.linearize(x32, s32)
  assert s32_step.state.dtype == tf.float32 and s32_step.jacobian.dtype == tf.float32
  for a, b in zip(s32_step, s64_step):
    a, b = a.numpy().astype(np.float64), b.numpy()
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.max(np.abs(b))), np.max(np.abs(a - b))
  np.testing.assert_allclose(c32.step(x32, s32).numpy(), c64.step(x, s).numpy(), rtol=0, atol=1e-5)
  np.testing.assert_allclose(c32.dense_d(s32_step.gates).numpy(),
                             c64.dense_d(s64_step.gates).numpy(), rtol=0, atol=1e-5)
