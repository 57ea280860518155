"""Exact real-time recurrent learning (docs/algorithms.md §2)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import Estimator
from ok_tf.estimators.base import dtype_bytes
from ok_tf.estimators.base import in_xla
from ok_tf.estimators.base import stream_matmul


class RTRLState(NamedTuple):
  """Exact RTRL: G_t in full, its last two axes swapped, ``gt`` [B, S, k·n, a] with
  gt[b, s, p, i] = G_t[b, s, i, p] (the a entries that ĥ_t ⊗ D_t fills for one (s, p)
  are then contiguous)."""
  h: tf.Tensor
  gt: tf.Tensor


class RTRL(Estimator):
  """Exact RTRL (O(S²·a·k·n) per step): G_t = H_t G_{t−1} + ĥ_t ⊗ D_t.

  H_t G_{t−1} is one [S, S]·[S, k·n·a] matmul per stream (G in the layout of
  :class:`RTRLState`; :func:`stream_matmul`, one 2-D product when B = 1 and the shapes
  are static).  The immediate term ĥ_t ⊗ D_t is non-zero only in the S·k rows
  (s, g·n + unit(s)) of that layout, each a copy of ĥ_t scaled by d_t[s, g]: it is added
  to those rows alone, in place in the product's buffer (``InplaceAdd``; under XLA its
  ``tensor_scatter_nd_add``), never formed as a dense [S, a, k·n] tensor.
  """

  name = "rtrl"
  order = 5
  stochastic = False
  exact = True
  dominant_product = "hg"

  def __init__(self, cell):
    super().__init__(cell)
    n, k = self.units, self.columns // self.units
    s, g = np.meshgrid(np.arange(self.state_size), np.arange(k), indexing="ij")
    # the rows (s, g·n + unit(s)) of one stream's [S·k·n, a] view, in the order of d_t
    self._immediate_rows = (s * self.columns + g * n + s % n).reshape(-1).astype(np.int32)

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """H_t G: 2 S²·a·k·n flops; state s_t and G_t."""
    cls.rank_for(rank)
    s, entries = dims.state, dims.state * dims.hhat * dims.columns
    return Cost(2.0 * batch * s * entries, batch * (s + entries) * dtype_bytes(dtype))

  def init(self, batch_size):
    return RTRLState(self._zeros(batch_size, self.state_size),
                     self._zeros(batch_size, self.state_size, self.columns, self.hhat_size))

  def step(self, state, x, rng=None):
    st = self._linearize(state, x)
    carried = stream_matmul(st.jacobian, self._flat(state))           # [B, S, k·n·a]
    rows = self._rows(carried.shape[0] or tf.shape(carried)[0])
    immediate = tf.reshape(st.gates[:, :, :, None] * st.hhat[:, None, None, :],
                           [-1, self.hhat_size])                       # d_t[b, s, g] ĥ_t[b]
    flat = tf.reshape(carried, [-1, self.hhat_size])
    if in_xla():     # XLA has no InplaceAdd; its scatter updates in place
      gt = tf.tensor_scatter_nd_add(flat, rows[:, None], immediate)
    else:             # TF's scatter would copy the product: InplaceAdd writes into its
      # input's buffer, and ``carried`` is this step's own product, read by nothing else,
      # so only the S·k rows are touched (no copy, no dense term)
      gt = tf.raw_ops.InplaceAdd(x=flat, i=rows, v=immediate)
    shape = state.gt.shape if state.gt.shape.is_fully_defined() else tf.shape(state.gt)
    return RTRLState(st.state, tf.reshape(gt, shape))

  def _rows(self, batch):
    """The rows (b, s, g·n + unit(s)) of the [B·S·k·n, a] view, b-major (a constant when
    B is static)."""
    offsets = self.state_size * self.columns
    if isinstance(batch, int):
      return tf.constant((np.arange(batch)[:, None] * offsets
                          + self._immediate_rows[None]).reshape(-1), tf.int32)
    return tf.reshape(tf.range(batch)[:, None] * offsets + self._immediate_rows[None], [-1])

  def _flat(self, state):
    """G as [B, S, k·n·a]."""
    return tf.reshape(state.gt, [-1, self.state_size, self.columns * self.hhat_size])

  def per_example_gradient(self, state, dl_ds):
    rows = tf.matmul(tf.cast(dl_ds, self.dtype)[:, None, :], self._flat(state))
    return tf.transpose(tf.reshape(rows, [-1, self.columns, self.hhat_size]), [0, 2, 1])

  def influence(self, state):
    return tf.transpose(state.gt, [0, 1, 3, 2])

  def gradient(self, state, dl_ds):
    dl_ds = tf.cast(dl_ds, self.dtype)
    batch = tf.cast(tf.shape(dl_ds)[0], self.dtype)
    rows = tf.matmul(dl_ds[:, None, :], self._flat(state))                # [B, 1, k·n·a]
    grad = tf.reduce_sum(rows, axis=[0, 1]) / batch
    return [tf.transpose(tf.reshape(grad, [self.columns, self.hhat_size]))]
