"""UORO, unbiased online recurrent optimisation (Tallec & Ollivier 2017)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ok_tf import kronecker
from ok_tf.hyperparameters import Hyperparameter
from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import Estimator
from ok_tf.estimators.base import dtype_bytes


class UOROState(NamedTuple):
  """UORO: G'_t = s̃ ⊗ θ̃, ``s`` [B, S], ``theta`` [B, a, k·n]."""
  h: tf.Tensor
  s: tf.Tensor
  theta: tf.Tensor


class UORO(Estimator):
  """Unbiased Online Recurrent Optimisation (Tallec & Ollivier 2017).

      ρ_0 = √(‖θ̃‖ / ‖H_t s̃‖),  ρ_1 = √(‖νᵀF_t‖ / ‖ν‖),  νᵀF_t = ĥ_tᵀ (νᵀ D_t)
      s̃ ← ρ_0 H_t s̃ + ρ_1 ν,   θ̃ ← θ̃/ρ_0 + ĥ_tᵀ(νᵀ D_t)/ρ_1
      dL_t/dW ≈ ((∂L_t/∂s_t)·s̃) θ̃

  ν ∈ {±1}^S uniform; ``eps`` guards zero norms (any positive ρ keeps it unbiased).
  """

  name = "uoro"
  order = 3
  hyperparameters = (
      Hyperparameter("eps", float, 1e-7, "Guard ε added to the norms in ρ_0 and ρ_1 "
                     "(any positive value keeps UORO unbiased).",
                     valid=lambda v: v > 0, rule="positive"),)

  def __init__(self, cell, eps: float = 1e-7):
    super().__init__(cell)
    self.eps = eps

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """H_t s̃ and the rank-one update of θ̃: 2(S² + 2a·k·n) flops; state 2S + a·k·n."""
    cls.rank_for(rank)
    s, ak = dims.state, dims.hhat * dims.columns
    return Cost(2.0 * batch * (s * s + 2 * ak), batch * (2 * s + ak) * dtype_bytes(dtype))

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
