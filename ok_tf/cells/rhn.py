"""The paper's recurrent highway network cell (depth 1, coupled carry gate)."""

from __future__ import annotations

import keras
import tensorflow as tf

from ok_tf.cells.base import KroneckerCell, sigmoid_prime


@keras.saving.register_keras_serializable(package="ok_tf")
class RHNCell(KroneckerCell):
  """The paper's recurrent highway network, depth 1, coupled carry gate.

      z_c, z_f = split(ĥ_t W)
      c = 2σ(z_c) − 1,   f = σ(z_f)
      h_t = f ⊙ h_{t−1} + (1 − f) ⊙ c

  with  d_c = (1 − f) ⊙ 2σ'(z_c),  d_f = (h_{t−1} − c) ⊙ σ'(z_f),
        D_t = [diag(d_c) | diag(d_f)],
        H_t = diag(f) + diag(d_c) W_hc^T + diag(d_f) W_hf^T.
  """

  cell_name = "rhn"
  order = 0
  num_gates = 2

  def _gates_and_state(self, z, state):
    z_c, z_f = tf.split(z, 2, axis=-1)
    sig_c = tf.sigmoid(z_c)
    f = tf.sigmoid(z_f)
    c = 2.0 * sig_c - 1.0
    new_state = f * state + (1.0 - f) * c
    return new_state, (sig_c, c, f)

  def _gates(self, aux, state, new_state):
    sig_c, c, f = aux
    d_c = (1.0 - f) * 2.0 * sigmoid_prime(sig_c)
    d_f = (state - c) * sigmoid_prime(f)
    return tf.stack([d_c, d_f], axis=-1)

  def _direct_jacobian(self, aux, state, new_state):
    _, _, f = aux
    return tf.linalg.diag(f)

  def _add_direct_jacobian(self, recurrent, aux, state, new_state):
    _, _, f = aux      # diag(f) + recurrent, writing only the diagonal
    return tf.linalg.set_diag(recurrent, tf.linalg.diag_part(recurrent) + f)

  def _direct_blocks(self, aux, state, new_state):
    _, _, f = aux
    return f[:, None, None, :]
