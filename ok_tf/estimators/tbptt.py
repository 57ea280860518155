"""Truncated BPTT(T) as a training method (docs/algorithms.md §5)."""

from __future__ import annotations

from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import Method
from ok_tf.estimators.base import dtype_bytes


class TBPTT(Method):
  """Truncated BPTT(T) (docs/algorithms.md §5): not an estimator (it has no G'_t;
  :class:`ok_tf.training.TBPTTTrainer` runs it), described here so that the method list,
  the labels and the cost models have one source."""

  name = "tbptt"
  order = 6
  takes_truncation = True

  @classmethod
  def cost(cls, dims, rank=None, batch=1, truncation=None, dtype="float32"):
    """Forward 2a·k·n flops per step, backward about twice that; the states of a window
    (kept for the backward pass) and the carried state: (T + 1)·S."""
    cls.rank_for(rank)
    if truncation is None or int(truncation) < 1:
      raise ValueError(f"tbptt's cost needs the truncation length, got {truncation}")
    return Cost(6.0 * batch * dims.hhat * dims.columns,
                batch * (int(truncation) + 1) * dims.state * dtype_bytes(dtype))
