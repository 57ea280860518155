"""SnAp-1 (Menick et al. 2021; docs/algorithms.md §9)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ok_tf import cells as cells_lib
from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import Estimator
from ok_tf.estimators.base import dtype_bytes


class SnAp1State(NamedTuple):
  """SnAp-1: the entries of G_t that ĥ_t ⊗ D_t can fill, ``j`` [B, a, k, S] with
  j[b, i, g, s] = G[b, s, i, g·n + unit(s)] (docs/algorithms.md §9)."""
  h: tf.Tensor
  j: tf.Tensor


class SnAp1(Estimator):
  """SnAp-1 (Menick et al. 2021; docs/algorithms.md §9): G'_t keeps only the entries
  through which W reaches a unit in one step, those of ĥ_t ⊗ D_t,

      J_t[i, g, s] = G'_t[s, i, g·n + unit(s)],
      J_t[i, g, s] = Σ_{s': unit(s') = unit(s)} H_t[s, s'] J_{t−1}[i, g, s'] + ĥ_t[i] d_t[s, g]
      dL_t/dW[i, g·n + j] ≈ Σ_{s: unit(s) = j} (∂L_t/∂s_t)[s] J_t[i, g, s]

  i.e. G'_t = P(H_t G'_{t−1} + ĥ_t ⊗ D_t) with P the projection onto that pattern.  With
  S = n (RHN, tanh, leaky tanh) only diag(H_t) enters; for the LSTM the 2 × 2 block of H_t between
  unit j's (c_j, h_j).  O(S·a·k) per step; deterministic and biased (exact when H_t has
  no entries between different units, e.g. with zero recurrent weights).
  """

  name = "snap1"
  order = 4
  stochastic = False

  def __init__(self, cell):
    super().__init__(cell)
    self.blocks = self.state_size // self.units       # m: state coordinates per unit
    self.gates = self.columns // self.units           # k
    # unit_one_hot[s, j] = [unit(s) = j], unit(s) = s mod n
    self.unit_one_hot = tf.one_hot(tf.range(self.state_size) % self.units, self.units,
                                   dtype=self.dtype)

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """m multiply-adds by H_t's blocks and one for ĥ_t ⊗ d_t per kept entry, and one per
    entry for the gradient: 2(m + 2)·S·a·k flops (m = S/n); state S + S·a·k."""
    cls.rank_for(rank)
    m, k = dims.state // dims.units, dims.columns // dims.units
    kept = dims.state * dims.hhat * k
    return Cost(2.0 * batch * (m + 2) * kept, batch * (dims.state + kept) * dtype_bytes(dtype))

  def init(self, batch_size):
    return SnAp1State(self._zeros(batch_size, self.state_size),
                      self._zeros(batch_size, self.hhat_size, self.gates, self.state_size))

  def step(self, state, x, rng=None):
    """J_t from H_t's unit blocks alone (``cell.linearize_blocks``: H_t is never formed),
    then :meth:`update`; analysis/estimator_steps.py times the two stages."""
    st = self.cell.linearize_blocks(x, state.h)
    return SnAp1State(st.state, self.update(state.j, st))

  #: A state of at least this many numbers is updated by one XLA-compiled pass
  #: (:func:`snap1_update` under ``jit_compile``); TensorFlow's own ops take three passes
  #: over it, with slow broadcasts, but below this size XLA's launch costs more.
  fuse_min_entries = 1 << 15

  def update(self, j, st: cells_lib.UnitStep):
    """J_t from J_{t−1} ``j`` [B, a, k, S] and the cell's :class:`~ok_tf.cells.UnitStep`
    (:func:`snap1_update`, fused by XLA for states of ``fuse_min_entries`` numbers or more)."""
    size = j.shape.num_elements()
    fused = size is not None and size >= self.fuse_min_entries
    return (_snap1_update_fused if fused else snap1_update)(j, st.blocks, st.hhat, st.gates)

  def per_example_gradient(self, state, dl_ds):
    weighted = state.j * tf.cast(dl_ds, self.dtype)[:, None, None, :]          # [B, a, k, S]
    per_unit = tf.reduce_sum(
        tf.reshape(weighted, [-1, self.hhat_size, self.gates, self.blocks, self.units]), axis=3)
    return tf.reshape(per_unit, [-1, self.hhat_size, self.columns])

  def influence(self, state):
    dense = state.j[..., None] * self.unit_one_hot                          # [B, a, k, S, n]
    return tf.reshape(tf.transpose(dense, [0, 3, 1, 2, 4]),
                      [-1, self.state_size, self.hhat_size, self.columns])


def snap1_update(j, blocks, hhat, gates):
  """SnAp-1's recursion, elementwise: J_t = (H_t's unit blocks) J_{t−1} + ĥ_t d_tᵀ,

      J_t[i, g, p·n + u] = Σ_q blocks[p, q, u] J_{t−1}[i, g, q·n + u] + ĥ_t[i] d_t[p·n + u, g]

  for J_{t−1} ``j`` [B, a, k, S], ``blocks`` [B, m, m, n] (:class:`ok_tf.cells.UnitStep`),
  ĥ_t ``hhat`` [B, a] and d_t ``gates`` [B, S, k]."""
  m, n = blocks.shape[1], blocks.shape[3]
  if m == 1:                                     # H_t's diagonal
    carried = j * blocks[:, None, 0]                               # [B, a, k, S] · [B, 1, 1, n]
  else:
    a, k = j.shape[1], j.shape[2]
    carried = tf.reshape(
        tf.reduce_sum(blocks[:, None, None] * tf.reshape(j, [-1, a, k, 1, m, n]), axis=4),
        tf.shape(j))
  return carried + hhat[:, :, None, None] * tf.transpose(gates, [0, 2, 1])[:, None]


_snap1_update_fused = tf.function(snap1_update, jit_compile=True)
