"""The vanilla tanh RNN cell."""

from __future__ import annotations

import keras
import tensorflow as tf

from ok_tf.cells.base import KroneckerCell


@keras.saving.register_keras_serializable(package="ok_tf")
class TanhRNNCell(KroneckerCell):
  """Vanilla RNN: h_t = tanh(ĥ_t W);  D_t = diag(1 − h_t²),  H_t = D_t W_h^T."""

  cell_name = "tanh"
  order = 1
  num_gates = 1

  def _gates_and_state(self, z, state):
    return tf.tanh(z), ()

  def _gates(self, aux, state, new_state):
    return (1.0 - tf.square(new_state))[:, :, None]

  def _direct_jacobian(self, aux, state, new_state):
    return tf.zeros_like(new_state)[:, :, None] * tf.zeros_like(new_state)[:, None, :]

  def _add_direct_jacobian(self, recurrent, aux, state, new_state):
    return recurrent   # no direct path: H_t = D_t W_h^T

  def _direct_blocks(self, aux, state, new_state):
    return None
