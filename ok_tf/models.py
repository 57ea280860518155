"""A recurrent language model: a cell from :mod:`ok_tf.cells` and a linear softmax readout.

    s_t = cell(x_t, s_{t−1}),  x_t one-hot (no embedding)
    logits_t = [h_t, 1] W_out,  W_out ∈ R^{(n+1) × V}  (a Dense layer with bias)

Both W and W_out are initialised N(0, 0.01²) as in the paper. The loss of stream b is the
cross-entropy of its next symbol y_b, L_b = −log softmax(logits_t)[y_b] (nats); the
readout's gradients, ∂L_b/∂s_t for every stream and ∂(mean_b L_b)/∂W_out, come from
:func:`readout_gradient`, the one place where the trainers and the diagnostics get them.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from ok_tf import cells


@keras.saving.register_keras_serializable(package="ok_tf")
class RecurrentModel(keras.Model):
  """Cell + readout.

  Args:
    cell: ``"rhn"``, ``"tanh"``, ``"lstm"`` or a :class:`ok_tf.cells.KroneckerCell`.
    units: n (ignored when ``cell`` is a layer).
    vocab_size: V, the size of the one-hot input and of the softmax.
    init_stddev: standard deviation of the N(0, σ²) initialisation of W and W_out.
    dtype: ``"float32"`` (default) or ``"float64"``.
  """

  def __init__(self, cell="rhn", units: int = 128, vocab_size: int = 4,
               init_stddev: float = 0.01, dtype="float32", **kwargs):
    super().__init__(dtype=dtype, **kwargs)
    self.vocab_size = int(vocab_size)
    self.units = int(units)
    self.init_stddev = float(init_stddev)
    names = {cls: name for name, cls in cells.CELLS.items()}
    self.cell_name = cell if isinstance(cell, str) else names.get(type(cell), type(cell).__name__)
    init = keras.initializers.RandomNormal(stddev=self.init_stddev)
    if isinstance(cell, str):
      cell = cells.get(cell, self.units, kernel_initializer=init, dtype=dtype)
    self.cell = cell
    self.readout = keras.layers.Dense(
        self.vocab_size, kernel_initializer=keras.initializers.RandomNormal(
            stddev=self.init_stddev),
        bias_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
        dtype=dtype, name="readout")
    self.cell.build(self.vocab_size)
    self.readout.build((None, self.cell.output_size))

  @property
  def recurrent_variables(self) -> list:
    """The variables whose gradient the estimators provide (W)."""
    return list(self.cell.trainable_variables)

  @property
  def readout_variables(self) -> list:
    """The readout's variables (exact gradient by ordinary autodiff)."""
    return list(self.readout.trainable_variables)

  def one_hot(self, ids):
    return tf.one_hot(ids, self.vocab_size, dtype=self.cell.compute_dtype)

  def logits(self, state):
    """logits_t from the state s_t."""
    return self.readout(self.cell.output(state))

  def step_losses(self, state, targets):
    """L_b = −log softmax(logits_t)[y_b] of every stream, nats, ``[B]``."""
    return cross_entropy(self.logits(state), targets)

  def call(self, ids, initial_state=None):
    """Forward pass over ``ids`` [B, T] (int): returns (logits [B, T, V], final state)."""
    ids = tf.convert_to_tensor(ids)
    batch = tf.shape(ids)[0]
    state = self.cell.zero_state(batch) if initial_state is None else initial_state
    xs = tf.transpose(self.one_hot(ids), [1, 0, 2])

    def body(s, x):
      return self.cell(x, s)

    states = tf.scan(body, xs, initializer=state)
    logits = self.logits(tf.reshape(states, [-1, self.cell.state_size]))
    logits = tf.reshape(logits, [tf.shape(xs)[0], batch, self.vocab_size])
    return tf.transpose(logits, [1, 0, 2]), states[-1]

  def get_config(self):
    return {"cell": self.cell_name,
            "units": self.units, "vocab_size": self.vocab_size,
            "init_stddev": self.init_stddev, "dtype": self.dtype_policy.name,
            "name": self.name}


def cross_entropy(logits, targets):
  """Per-stream softmax cross-entropy in nats, ``[B]``."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


class Readout(NamedTuple):
  """The readout of one step for B streams (:func:`readout_gradient`)."""
  losses: tf.Tensor   # L_b, nats, [B]
  dl_ds: tf.Tensor    # ∂L_b/∂s_t of each stream's own loss, [B, S]
  grads: list         # ∂L/∂W_out of the batch mean L = mean_b L_b (kernel, bias)


def readout_gradient(model: RecurrentModel, state, targets) -> Readout:
  """The losses at the states s_t ``[B, S]`` and their gradients, from one tape:

      L = mean_b L_b,   ∂L_b/∂s_b = B · ∂L/∂s_b,   ∂L/∂W_out

  (L_b depends on s_b alone, so B times the batch mean's gradient is each stream's own,
  exactly when B is a power of two.)  ``dl_ds`` is what ``est.gradient`` expects.
  """
  with tf.GradientTape() as tape:
    tape.watch(state)
    losses = model.step_losses(state, targets)
    mean = tf.reduce_mean(losses)
  grads = tape.gradient(mean, [state] + model.readout_variables)
  batch = tf.cast(tf.shape(losses)[0], grads[0].dtype)
  return Readout(losses, grads[0] * batch, grads[1:])
