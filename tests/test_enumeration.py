"""Exact tests by enumeration: every estimator's randomness is random signs, so on tiny cells
the expectation over all sign patterns can be computed exactly.

The patterns go in the batch dimension: stream b of a batch of 2^D streams (D the number
of signs one stream draws over the whole sequence) plays the same inputs and draws the
bits of b, through a stand-in for the generator (:class:`Patterns`). The mean over the
streams is then the expectation itself, and unbiasedness is an identity: the mean of the
accumulated estimates Σ_t (∂L/∂s_t) G'_t equals exact RTRL's to 1e-12 (float64), with no
statistical tolerance. The variance of one OK reduction over all its sign patterns equals
(★) the same way. A deliberately biased variant (patterns drawn with unequal
probabilities) is caught, which shows the check's power.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import cells
from ok_tf import estimators
from ok_tf import kronecker

import toolkit

# every stochastic estimator of the registry, at ranks 1 and 2 where it takes a rank
STOCHASTIC = tuple((name, r) for name, m in estimators.ESTIMATORS.items() if m.stochastic
                   for r in ((1, 2) if m.takes_rank else (None,)))
CELLS = tuple(cells.CELLS)       # every registered cell
UNITS, INPUT_DIM, STEPS = 2, 2, 3
MAX_SIGNS = 14      # at most 2^14 streams


class Counting:
  """A generator stand-in that counts the signs one stream draws (returns zeros)."""

  def __init__(self):
    self.per_stream = 0

  def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
    shape = [int(d) for d in np.asarray(shape)]
    assert (minval, maxval, dtype) == (0, 2, tf.int32), "only random signs are drawn"
    self.per_stream += int(np.prod(shape[1:]))
    return tf.zeros(shape, dtype)


class Patterns:
  """A generator stand-in: stream b draws the bits of ``table[b]``, in order of the calls."""

  def __init__(self, table: np.ndarray):
    self.table, self.used = table, 0

  def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
    shape = [int(d) for d in np.asarray(shape)]
    assert (minval, maxval, dtype) == (0, 2, tf.int32), "only random signs are drawn"
    width = int(np.prod(shape[1:]))
    bits = self.table[:, self.used:self.used + width]
    self.used += width
    return tf.constant(bits.reshape(shape), tf.int32)


def all_patterns(count: int) -> np.ndarray:
  """Every one of the 2^count bit patterns, one per row."""
  return np.array(list(itertools.product((0, 1), repeat=count)), np.int32)


class Sequence:
  """A tiny cell with fixed weights, inputs and loss gradients; exact RTRL's Σ_t δ_t G_t."""

  def __init__(self, cell_name, seed):
    self.cell = toolkit.make_cell(cell_name, units=UNITS, input_dim=INPUT_DIM, seed=seed,
                                  stddev=0.8)
    rs = np.random.RandomState(seed)
    self.xs = rs.normal(size=(STEPS, INPUT_DIM))
    self.gs = rs.normal(size=(STEPS, self.cell.state_size))
    self.exact = self.accumulated(estimators.get("rtrl", self.cell), 1, None)[0]

  def accumulated(self, est, rows, rng):
    """Σ_t (∂L/∂s_t) G'_t per stream, ``[rows, a, k·n]`` (eager, one rng call per draw)."""
    state = est.init(rows)
    acc = 0.0
    for t in range(STEPS):
      x = tf.constant(np.repeat(self.xs[t][None], rows, axis=0))
      state = est.step(state, x, rng)
      g = tf.constant(np.repeat(self.gs[t][None], rows, axis=0))
      acc = acc + est.per_example_gradient(state, g).numpy()
    return acc

  def enumerated(self, name, rank, weights=None):
    """(the estimates of every sign pattern, the patterns' probabilities)."""
    est = estimators.get(name, self.cell, rank=rank)
    counting = Counting()
    self.accumulated(est, 1, counting)
    signs = counting.per_stream
    assert 0 < signs <= MAX_SIGNS, signs
    table = all_patterns(signs)
    if weights is None:
      probs = np.full(len(table), 1.0 / len(table))
    else:
      probs = weights(table) / weights(table).sum()
    return self.accumulated(est, len(table), Patterns(table)), probs


SEQUENCES = {}


def sequence(cell_name):
  return SEQUENCES.get(cell_name) or SEQUENCES.setdefault(cell_name, Sequence(cell_name, 3))


@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("name,rank", STOCHASTIC)
def test_the_mean_over_all_sign_patterns_is_exact_rtrl(cell_name, name, rank):
  seq = sequence(cell_name)
  estimates, probs = seq.enumerated(name, rank)
  mean = np.tensordot(probs, estimates, axes=1)
  scale = np.max(np.abs(seq.exact))
  assert scale > 1e-3                                      # a gradient worth the name
  spread = np.sqrt(np.tensordot(probs, np.sum((estimates - seq.exact) ** 2, axis=(1, 2)), 1))
  assert spread > 1e-6 * scale, (name, spread)             # the estimator really is random
  assert np.max(np.abs(mean - seq.exact)) < 1e-12 * scale, np.max(np.abs(mean - seq.exact))


@pytest.mark.parametrize("name,rank", (("ok", 2), ("uoro", None)))
def test_a_biased_variant_is_caught(name, rank):
  """Negative control: each bit 1 with probability 2/3 instead of 1/2 (signs of mean 1/3),
  independently. The mean then misses exact RTRL by far more than the identity's 1e-12."""
  seq = sequence("tanh")
  estimates, probs = seq.enumerated(name, rank, weights=lambda t: 2.0 ** t.sum(axis=1))
  mean = np.tensordot(probs, estimates, axes=1)
  error = np.max(np.abs(mean - seq.exact)) / np.max(np.abs(seq.exact))
  assert error > 1e-6, error


@pytest.mark.parametrize("rank", (1, 2, 3))
def test_the_variance_of_opt_over_all_signs_is_star(rank):
  """Opt(C, r) over every sign pattern of its ξ: E[L Rᵀ] = C and E‖L Rᵀ − C‖² = (★), exactly
  (float64, 1e-12), for a C whose reduction mixes terms (k ≥ 1)."""
  q = rank + 1
  c = np.random.RandomState(rank).normal(size=(q, q))
  counting = Counting()
  kronecker.opt(tf.constant(c[None]), rank, counting)
  table = all_patterns(counting.per_stream)
  cs = tf.constant(np.repeat(c[None], len(table), axis=0))
  left, right = kronecker.opt(cs, rank, Patterns(table))
  products = tf.matmul(left, right, transpose_b=True).numpy()
  mean = products.mean(axis=0)
  variance = np.mean(np.sum((products - c) ** 2, axis=(1, 2)))
  star = float(kronecker.opt_variance(tf.constant(c[None]), rank).numpy()[0])
  assert star > 1e-3
  np.testing.assert_allclose(mean, c, atol=1e-12 * np.abs(c).max())
  assert abs(variance - star) < 1e-12 * max(1.0, star), (variance, star)
