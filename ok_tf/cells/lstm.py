"""The LSTM cell without peepholes."""

from __future__ import annotations

import keras
import tensorflow as tf

from ok_tf.cells.base import KroneckerCell, sigmoid_prime


@keras.saving.register_keras_serializable(package="ok_tf")
class LSTMCell(KroneckerCell):
  """LSTM without peepholes; state s = [c, h] (S = 2n), gates (i, f, o, g) (k = 4).

      i, f, o = σ(z_i), σ(z_f), σ(z_o),   g = tanh(z_g)
      c_t = f ⊙ c_{t−1} + i ⊙ g,          h_t = o ⊙ tanh(c_t)

  Gate derivatives (τ = tanh(c_t), τ' = 1 − τ²):
      rows of c:  [g σ'_i,  c_{t−1} σ'_f,  0,        i (1 − g²)]
      rows of h:  o τ' × (rows of c), except the o column: τ σ'_o
  H_t = [[diag(f), 0], [diag(o τ' f), 0]] + D_t W_h^T in the columns of h.
  """

  cell_name = "lstm"
  order = 2
  num_gates = 4
  state_multiplier = 2

  def _gates_and_state(self, z, state):
    n = self.units
    c_prev = state[:, :n]
    z_i, z_f, z_o, z_g = tf.split(z, 4, axis=-1)
    i, f, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.sigmoid(z_o)
    g = tf.tanh(z_g)
    c = f * c_prev + i * g
    tau = tf.tanh(c)
    h = o * tau
    return tf.concat([c, h], axis=-1), (i, f, o, g, c_prev, tau)

  def _gates(self, aux, state, new_state):
    i, f, o, g, c_prev, tau = aux
    dc = tf.stack([g * sigmoid_prime(i), c_prev * sigmoid_prime(f),
                   tf.zeros_like(o), i * (1.0 - tf.square(g))], axis=-1)
    otau = (o * (1.0 - tf.square(tau)))[:, :, None]
    o_column = tf.one_hot(2, 4, dtype=dc.dtype)
    dh = otau * dc + (tau * sigmoid_prime(o))[:, :, None] * o_column
    return tf.concat([dc, dh], axis=1)

  def _direct_jacobian(self, aux, state, new_state):
    i, f, o, g, c_prev, tau = aux
    dc_dc = tf.linalg.diag(f)
    dh_dc = tf.linalg.diag(o * (1.0 - tf.square(tau)) * f)
    left = tf.concat([dc_dc, dh_dc], axis=1)                    # [B, 2n, n]
    return tf.concat([left, tf.zeros_like(left)], axis=-1)

  def _direct_blocks(self, aux, state, new_state):
    """[[f, 0], [o τ' f, 0]] per unit: (c, c), (c, h); (h, c), (h, h)."""
    i, f, o, g, c_prev, tau = aux
    zero = tf.zeros_like(f)
    return tf.stack([tf.stack([f, zero], axis=1),
                     tf.stack([o * (1.0 - tf.square(tau)) * f, zero], axis=1)], axis=1)
