"""The leaky (continuous-time) tanh RNN cell of Murray (2019) and Marschall et al. (2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from ok_tf.cells.base import KroneckerCell
from ok_tf.hyperparameters import Hyperparameter


@keras.saving.register_keras_serializable(package="ok_tf")
class LeakyTanhCell(KroneckerCell):
  """Leaky tanh RNN, the Euler step of τ ds/dt = −s + tanh(W·[x; s; 1]) with α = Δt/τ:

      h_t = (1 − α) h_{t−1} + α tanh(ĥ_t W)

  with  D_t = diag(α (1 − tanh²(ĥ_t W))),  H_t = (1 − α) I + D_t W_h^T.
  α = 1 is the tanh cell; α defaults to 0.5 (``--leaky_alpha``), must be in (0, 1].

  Args:
    units: n.
    alpha: α, the leak (the share of the new activation in the state).
    **kwargs: as :class:`~ok_tf.cells.base.KroneckerCell`.
  """

  cell_name = "leaky"
  order = 3
  hyperparameters = (
      Hyperparameter("alpha", float, 0.5,
                     "α of the leaky cell, h_t = (1 − α) h_{t−1} + α tanh(ĥ_t W) (1: tanh).",
                     valid=lambda v: 0.0 < v <= 1.0, rule="in (0, 1]"),)
  num_gates = 1

  def __init__(self, units: int, alpha: float = 0.5, **kwargs):
    super().__init__(units, **kwargs)
    if not 0.0 < float(alpha) <= 1.0:
      raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    self.alpha = float(alpha)

  def get_config(self):
    config = super().get_config()
    config["alpha"] = self.alpha
    return config

  def _gates_and_state(self, z, state):
    tau = tf.tanh(z)
    return (1.0 - self.alpha) * state + self.alpha * tau, tau

  def _gates(self, aux, state, new_state):
    return (self.alpha * (1.0 - tf.square(aux)))[:, :, None]

  def _leak(self, state):
    """1 − α on every state coordinate, ``[B, S]``."""
    return tf.fill(tf.shape(state), tf.constant(1.0 - self.alpha, state.dtype))

  def _direct_jacobian(self, aux, state, new_state):
    return tf.linalg.diag(self._leak(state))

  def _add_direct_jacobian(self, recurrent, aux, state, new_state):
    return tf.linalg.set_diag(recurrent, tf.linalg.diag_part(recurrent) + self._leak(state))

  def _direct_blocks(self, aux, state, new_state):
    return self._leak(state)[:, None, None, :]
