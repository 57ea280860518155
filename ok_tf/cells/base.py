"""The base class of the recurrent cells: one weight matrix W, and the pieces RTRL needs.

Every cell here belongs to the class of docs/algorithms.md §1: all trainable parameters sit
in one matrix ``W ∈ R^{a × k·n}`` (``kernel``) that multiplies the row vector

    ĥ_t = [x_t, h_{t-1}, 1]              (length a = input_dim + units + 1)

and hidden unit j depends only on coordinate j of each of the k gate groups of
``z = ĥ_t W``.  Then the immediate Jacobian ∂s_t/∂W of the state s_t (size S) is the
Kronecker product ``ĥ_t ⊗ D_t`` with

    D_t[s, g·n + j] = d_t[s, g] · δ(j, unit(s))          D_t ∈ R^{S × k·n}

(``unit(s) = s mod n``), and the state Jacobian is ``H_t = ∂s_t/∂s_{t-1} ∈ R^{S × S}``.

Every cell is a Keras 3 RNN cell (``state_size`` S, ``output_size`` n,
``call(inputs, states) -> (h_t, [s_t])``, ``get_initial_state(batch_size)``), so
``keras.layers.RNN(RHNCell(n), return_sequences=True)`` runs it over a sequence, and it is
registered for Keras serialisation (package ``ok_tf``). Batched over a leading axis B it
also provides what the estimators use:

* ``cell.step(x, state)``: s_t alone (the training loops' forward step; autodiff through
  it is BPTT);
* ``cell.linearize(x, state)``: a :class:`CellStep` with the next state, ĥ_t, the gate
  derivatives d_t (``[B, S, k]``) and H_t (``[B, S, S]``, materialised);
* ``cell.linearize_blocks(x, state)``: the same with only H_t's entries between the
  coordinates of one unit (:class:`UnitStep`, ``[B, S/n, S/n, n]``, O(S²/n)), what SnAp-1
  reads;
* ``cell.dense_d(gates)``: D_t as a dense ``[B, S, k·n]`` matrix;
* ``cell.d_diagonals(gates)``: D_t as its k + S/n − 1 non-zero diagonals
  (:class:`ok_tf.kronecker.Diagonals`), what OK's reduction uses;
* ``cell.output(state)``: the part of the state the readout sees (h).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ok_tf import kronecker


class CellStep(NamedTuple):
  """One linearised step of a cell (all tensors batched over the leading axis B).

  Attributes:
    state: s_t, the next state, ``[B, S]``.
    hhat: ĥ_t = [x_t, h_{t-1}, 1], ``[B, a]``.
    gates: d_t, ``[B, S, k]``: D_t[s, g·n + unit(s)] = d_t[s, g], zero elsewhere.
    jacobian: H_t = ∂s_t/∂s_{t-1}, ``[B, S, S]``.
  """

  state: tf.Tensor
  hhat: tf.Tensor
  gates: tf.Tensor
  jacobian: tf.Tensor


class UnitStep(NamedTuple):
  """One linearised step with H_t kept only between the coordinates of each unit.

  Attributes:
    state, hhat, gates: as in :class:`CellStep`.
    blocks: ``[B, m, m, n]`` (m = S/n): blocks[b, p, q, j] = H_t[p·n + j, q·n + j], the
      m × m block of H_t between unit j's own state coordinates.
  """

  state: tf.Tensor
  hhat: tf.Tensor
  gates: tf.Tensor
  blocks: tf.Tensor


def sigmoid_prime(sig):
  """σ'(z) written in terms of σ(z)."""
  return sig * (1.0 - sig)


@keras.saving.register_keras_serializable(package="ok_tf")
class KroneckerCell(keras.layers.Layer):
  """Base class: one weight matrix ``kernel`` (W, bias as last row) of shape [a, k·n].

  Subclasses set ``cell_name`` (the registry's key), ``num_gates`` (k) and
  ``state_multiplier`` (S = state_multiplier · n), and implement :meth:`_gates_and_state`,
  :meth:`_gates` and :meth:`_direct_jacobian`; one module of :mod:`ok_tf.cells` each.

  Args:
    units: n, the number of hidden units.
    kernel_initializer: initialiser of W; the paper's N(0, 0.01²) by default.
    **kwargs: Keras layer arguments (``dtype="float64"`` for exactness tests).
  """

  #: The cell's name in the registry (``--cell``); empty for the base.  (Not ``name``:
  #: that is the Keras layer's own.)
  cell_name = ""
  #: Position in the registry's listings (help texts, tables).
  order = 100
  #: The cell's own arguments beyond ``units``: :class:`ok_tf.hyperparameters.Hyperparameter`
  #: s, each a keyword of ``__init__`` and a config field and flag ``--{cell_name}_{name}``.
  hyperparameters: tuple = ()
  num_gates = 1
  state_multiplier = 1

  def __init__(self, units: int, kernel_initializer=None, **kwargs):
    super().__init__(**kwargs)
    if int(units) <= 0:
      raise ValueError(f"units must be a positive integer, got {units!r}")
    self.units = int(units)
    if kernel_initializer is None:
      kernel_initializer = keras.initializers.RandomNormal(stddev=0.01)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.input_dim = None

  # ----------------------------------------------------------------- structure
  @property
  def state_size(self) -> int:
    """S, the size of the recurrent state."""
    return self.state_multiplier * self.units

  @property
  def output_size(self) -> int:
    return self.units

  @property
  def hhat_size(self) -> int:
    """a = input_dim + units + 1, the length of ĥ_t (rows of W)."""
    return self.input_dim + self.units + 1

  @property
  def kernel_columns(self) -> int:
    """k·n, the columns of W."""
    return self.num_gates * self.units

  def build(self, input_shape):
    """Creates W ``[a, k·n]``; ``input_shape`` is that of one step's input, ``(B, d)``.

    (A plain integer d is accepted too.)
    """
    if isinstance(input_shape, int):
      input_dim = input_shape
    else:
      input_dim = tuple(input_shape)[-1]
      if input_dim is None:
        raise ValueError(f"{type(self).__name__} needs a known input size; got input "
                         f"shape {tuple(input_shape)}")
    self.input_dim = int(input_dim)
    self.kernel = self.add_weight(
        name="kernel",
        shape=(self.hhat_size, self.kernel_columns),
        initializer=self.kernel_initializer,
        dtype=self.variable_dtype,
    )
    # unit(s) one-hot: E[s, j] = δ(j, s mod n), used to lay out D_t and H_t.
    self._unit_of_state = tf.constant(
        [[1.0 if s % self.units == j else 0.0 for j in range(self.units)]
         for s in range(self.state_size)], dtype=self.compute_dtype)
    super().build(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({
        "units": self.units,
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
    })
    return config

  # ----------------------------------------------------------------- forward
  def zero_state(self, batch_size) -> tf.Tensor:
    """s_0 = 0, ``[B, S]``."""
    return tf.zeros([batch_size, self.state_size], dtype=self.compute_dtype)

  def get_initial_state(self, batch_size=None) -> list:
    """Keras's RNN-cell protocol: ``[s_0]`` with s_0 = 0, ``[B, S]``."""
    return [self.zero_state(batch_size)]

  def output(self, state: tf.Tensor) -> tf.Tensor:
    """h, the part of the state the readout sees (the last n coordinates)."""
    if self.state_size == self.units:
      return state
    return state[..., self.state_size - self.units:]

  def hhat(self, x: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
    """ĥ_t = [x_t, h_{t-1}, 1]."""
    x = tf.cast(x, self.compute_dtype)
    # a constant when the batch is static (no op per step)
    ones = (tf.ones([x.shape[0], 1], x.dtype) if x.shape[0] is not None
            else tf.ones_like(x[:, :1]))
    return tf.concat([x, self.output(state), ones], axis=-1)

  def step(self, x, state) -> tf.Tensor:
    """s_t = cell(x_t, s_{t-1}); differentiable, so a tape through it gives BPTT."""
    state = tf.convert_to_tensor(state, dtype=self.compute_dtype)
    z = tf.matmul(self.hhat(x, state), tf.cast(self.kernel, self.compute_dtype))
    new_state, _ = self._gates_and_state(z, state)
    return new_state

  def call(self, inputs, states, training=False):
    """Keras's RNN-cell protocol: ``(h_t, [s_t])`` from x_t and ``[s_{t-1}]``."""
    del training
    state = states[0] if isinstance(states, (list, tuple)) else states
    new_state = self.step(inputs, state)
    return self.output(new_state), [new_state]

  def linearize(self, x, state) -> CellStep:
    """One step and its linearisation: s_t, ĥ_t, d_t (gates of D_t) and H_t."""
    state = tf.convert_to_tensor(state, dtype=self.compute_dtype)
    hhat = self.hhat(x, state)
    kernel = tf.cast(self.kernel, self.compute_dtype)
    z = tf.matmul(hhat, kernel)
    new_state, aux = self._gates_and_state(z, state)
    gates = self._gates(aux, state, new_state)
    jacobian = self._add_direct_jacobian(self._recurrent_jacobian(gates, kernel), aux, state,
                                         new_state)
    return CellStep(new_state, hhat, gates, jacobian)

  def linearize_blocks(self, x, state) -> UnitStep:
    """One step and its linearisation with H_t only on its unit blocks (:class:`UnitStep`):
    s_t, ĥ_t, d_t as :meth:`linearize`, and blocks[b, p, q, j] = H_t[p·n + j, q·n + j]
    without forming H_t (O(S·m) rather than O(S²) per stream)."""
    state = tf.convert_to_tensor(state, dtype=self.compute_dtype)
    hhat = self.hhat(x, state)
    kernel = tf.cast(self.kernel, self.compute_dtype)
    new_state, aux = self._gates_and_state(tf.matmul(hhat, kernel), state)
    gates = self._gates(aux, state, new_state)
    blocks = self._recurrent_blocks(gates, kernel)
    direct = self._direct_blocks(aux, state, new_state)
    return UnitStep(new_state, hhat, gates, blocks if direct is None else blocks + direct)

  def _recurrent_blocks(self, gates, kernel):
    """The unit blocks of D_t W_hᵀ: it fills only the columns of h (q = m − 1), where
    (D_t W_hᵀ)[p·n + j, (m−1)·n + j] = Σ_g d_t[p·n + j, g] W_h[j, g·n + j]."""
    n, k, m = self.units, self.num_gates, self.state_multiplier
    w_h = kernel[self.input_dim:self.input_dim + n, :]                  # [n(t), k·n]
    w_own = tf.linalg.diag_part(tf.transpose(tf.reshape(w_h, [n, k, n]), [1, 0, 2]))  # [k, j]
    through_h = tf.reduce_sum(tf.reshape(gates, [-1, m, n, k]) * tf.transpose(w_own), -1)
    # [B, m, m, n]: zero but in the last column block (q = m − 1)
    return tf.pad(through_h[:, :, None, :], [[0, 0], [0, 0], [m - 1, 0], [0, 0]])

  def _direct_blocks(self, aux, state, new_state):
    """The unit blocks of ∂s_t/∂s_{t−1} at fixed z, ``[B, m, m, n]`` (None: zero).  By
    default read off :meth:`_direct_jacobian`; cells override it to skip the dense form."""
    n, m = self.units, self.state_multiplier
    dense = tf.reshape(self._direct_jacobian(aux, state, new_state), [-1, m, n, m, n])
    return tf.linalg.diag_part(tf.transpose(dense, [0, 1, 3, 2, 4]))

  def dense_d(self, gates: tf.Tensor) -> tf.Tensor:
    """D_t[s, g·n + j] = d_t[s, g] δ(j, unit(s)), as a dense ``[B, S, k·n]`` tensor."""
    d = gates[:, :, :, None] * self._unit_of_state[None, :, None, :]
    return tf.reshape(d, [-1, self.state_size, self.kernel_columns])

  def d_diagonals(self, gates: tf.Tensor) -> kronecker.Diagonals:
    """D_t as the diagonals of the ``[S, k·n]`` matrix that hold its S·k non-zeros.

    D_t[s, g·n + unit(s)] sits on the diagonal of offset o·n with o = g − ⌊s/n⌋, so
    the offsets are o·n for o = −(S/n − 1) .. k − 1, and on that diagonal row s holds
    d_t[s, o + ⌊s/n⌋] (every entry of these diagonals is one of D_t's positions).
    """
    n, k, rows = self.units, self.num_gates, self.state_size
    cols = self.kernel_columns
    flat = tf.reshape(gates, [-1, rows * k])
    offsets, values = [], []
    for o in range(-(self.state_multiplier - 1), k):     # k + S/n − 1 diagonals
      s = np.arange(max(0, -o * n), min(rows, cols - o * n))
      offsets.append(o * n)
      values.append(tf.gather(flat, s * k + o + s // n, axis=1))
    return kronecker.Diagonals(tuple(offsets), tuple(values), rows, cols)

  def _recurrent_jacobian(self, gates, kernel):
    """The part of H_t through h_{t-1} in ĥ_t: D_t W_h^T, placed in h's columns.

    (D_t W_h^T)[s, t] = Σ_g d_t[s, g] W[V + t, g·n + unit(s)],  W_h = W[V:V+n, :].
    Computed from the gate derivatives in O(S·k·n) per example (no dense D): one
    [B, S, n] product per gate group, summed by one ``add_n``.
    """
    n, k = self.units, self.num_gates
    w_h = kernel[self.input_dim:self.input_dim + n, :]             # [n(t), k·n]
    if k == 1:       # one gate group: d_t[s] W_h[t, unit(s)], a broadcast product
      w_sel = tf.transpose(w_h)                                     # [j, t]
      if self.state_multiplier > 1:
        w_sel = tf.tile(w_sel, [self.state_multiplier, 1])          # [s, t]
      through_h = gates * w_sel
      if self.state_size == n:
        return through_h
      return tf.concat([tf.zeros_like(through_h[:, :, :self.state_size - n]), through_h], -1)
    # w_sel[s, g, t] = W_h[t, g·n + unit(s)]: W_h's blocks transposed, repeated S/n times.
    w_sel = tf.transpose(tf.reshape(w_h, [n, k, n]), [2, 1, 0])    # [j, g, t]
    if self.state_multiplier > 1:
      w_sel = tf.tile(w_sel, [self.state_multiplier, 1, 1])        # [s, g, t]
    through_h = tf.add_n([gates[:, :, g:g + 1] * w_sel[None, :, g, :] for g in range(k)])
    if self.state_size == n:
      return through_h
    zeros = tf.zeros_like(through_h[:, :, :self.state_size - n])
    return tf.concat([zeros, through_h], axis=-1)

  def _add_direct_jacobian(self, recurrent, aux, state, new_state):
    """H_t = (∂s_t/∂s_{t-1} with z fixed) + ``recurrent``; cells with a diagonal direct
    part override this to write only the diagonal."""
    return self._direct_jacobian(aux, state, new_state) + recurrent

  # ----------------------------------------------------------------- per cell
  def _gates_and_state(self, z, state):
    """Returns (s_t, aux) from z = ĥ_t W; aux holds what the derivatives need."""
    raise NotImplementedError

  def _gates(self, aux, state, new_state):
    """d_t, ``[B, S, k]``."""
    raise NotImplementedError

  def _direct_jacobian(self, aux, state, new_state):
    """∂s_t/∂s_{t-1} with z held fixed, ``[B, S, S]``."""
    raise NotImplementedError
