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
  """Cell + readout, a Keras model that saves and loads as ``.keras``.

      logits = model(ids)              # ids [B, T] int → logits [B, T, V]
      model.save("m.keras");  keras.models.load_model("m.keras")

  The weights are made in :meth:`build`, which the constructor calls (the input is a
  sequence of symbol ids, so V fixes every shape). ``get_config`` holds the cell's full
  Keras config, so a model round-trips whatever cell it holds.

  Args:
    cell: ``"rhn"``, ``"tanh"``, ``"lstm"``, a :class:`ok_tf.cells.KroneckerCell` or a
      cell's serialised Keras config.
    units: n (when ``cell`` is a name; a layer or a config brings its own).
    vocab_size: V, the size of the one-hot input and of the softmax.
    init_stddev: standard deviation of the N(0, σ²) initialisation of W_out and its bias,
      and of W when ``cell`` is a name (a layer or a config brings its own initialiser).
    dtype: ``"float32"`` (default) or ``"float64"``; a cell layer must have the same.

  Raises:
    ValueError: a cell layer built for another input size than V, or of another dtype.
  """

  def __init__(self, cell="rhn", units: int = 128, vocab_size: int = 4,
               init_stddev: float = 0.01, dtype="float32", **kwargs):
    super().__init__(dtype=dtype, **kwargs)
    self.vocab_size = int(vocab_size)
    self.init_stddev = float(init_stddev)
    # One initialiser object per weight, made in this order (W, W_out, bias): an unseeded
    # Keras initialiser fixes its seed when it is made, so a shared one would draw the same
    # numbers for every weight, and the order fixes the weights under a global seed.
    if isinstance(cell, str):
      cell = cells.get(cell, int(units), dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev))
    elif isinstance(cell, dict):
      cell = keras.saving.deserialize_keras_object(cell)
    if not isinstance(cell, cells.KroneckerCell):
      raise TypeError(f"cell must be a name ({', '.join(cells.CELLS)}), a KroneckerCell or "
                      f"its config; got {type(cell).__name__}")
    if cell.built and cell.input_dim != self.vocab_size:
      raise ValueError(f"the cell was built for inputs of size {cell.input_dim}, but the model's "
                       f"one-hot inputs have size vocab_size={self.vocab_size}: pass an unbuilt "
                       "cell or the matching vocab_size")
    if cell.dtype_policy.name != self.dtype_policy.name:
      raise ValueError(f"the cell computes in {cell.dtype_policy.name} and the model in "
                       f"{self.dtype_policy.name}: make both with the same dtype")
    self.cell = cell
    self.units = cell.units
    self.readout = keras.layers.Dense(
        self.vocab_size,
        kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
        bias_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
        dtype=dtype, name="readout")
    self.build((None, None))

  def build(self, input_shape=None):
    """Creates W (the cell's, input one-hot of size V) and W_out ``[n + 1, V]``."""
    if self.built:
      return
    if not self.cell.built:
      self.cell.build((None, self.vocab_size))
    self.readout.build((None, self.cell.output_size))
    self.built = True

  @property
  def cell_name(self) -> str:
    """The cell's short name (``"rhn"``, ``"tanh"``, ``"lstm"``), else its class name."""
    names = {cls: name for name, cls in cells.CELLS.items()}
    return names.get(type(self.cell), type(self.cell).__name__)

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

  def call(self, ids, initial_state=None, return_state=False):
    """logits ``[B, T, V]`` over ``ids`` [B, T] (int), from s_0 = ``initial_state`` or 0.

    With ``return_state=True`` returns ``(logits, s_T)`` so that a long text can be fed
    in pieces.
    """
    ids = tf.convert_to_tensor(ids)
    batch = tf.shape(ids)[0]
    state = self.cell.zero_state(batch) if initial_state is None else initial_state
    xs = tf.transpose(self.one_hot(ids), [1, 0, 2])
    states = tf.scan(lambda s, x: self.cell.step(x, s), xs, initializer=state)
    logits = tf.transpose(self.logits(states), [1, 0, 2])
    return (logits, states[-1]) if return_state else logits

  def get_config(self):
    return {"cell": keras.saving.serialize_keras_object(self.cell),
            "vocab_size": self.vocab_size, "init_stddev": self.init_stddev,
            "dtype": self.dtype_policy.name, "name": self.name}


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
