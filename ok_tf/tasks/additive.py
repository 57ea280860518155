"""Additive dependencies (Pitis 2016; the benchmark of Marschall et al. 2020), in pure TF.

Each of B streams is one endless binary sequence (docs/tasks.md, "Additive dependencies"):

* input x_t ~ Bernoulli(1/2), i.i.d. (:class:`~ok_tf.specs.Symbols` (2): ids 0 / 1);
* target y_t ~ Bernoulli(p_t), with

      p_t = 1/2 + 1/2 · x_{t−t1} − 1/4 · x_{t−t2},

  t1 = 3 and t2 = 8 by default (Pitis's values), so p_t ∈ {1/2, 1, 1/4, 3/4} for
  (x_{t−t1}, x_{t−t2}) = (0, 0), (1, 0), (0, 1), (1, 1); outputs
  :class:`~ok_tf.specs.Classes` (2), the loss the cross-entropy in bits.

The streams never end: every stream resets at step 0 only, and every step's loss counts
(weight 1). The inputs before step 0 are drawn too (``init`` draws a history of
max(t1, t2) Bernoulli(1/2) inputs per stream), so the statistics are those of the
stationary process from the first step on; the network sees only x_0, x_1, …, so at steps
t < max(t1, t2) it cannot know the older inputs (a vanishing fraction of a run).

Baselines (bits; :func:`conditional_entropy`): the cross-entropy of the best predictor
that knows none, the first, or both of the dependencies,

    no_memory = H(E[p]) = H(5/8) ≈ 0.9544,
    first     = E_{x_{t−t1}} H(E[p | x_{t−t1}]) = (H(3/8) + H(7/8)) / 2 ≈ 0.7490,
    both      = E H(p) = (H(1/2) + H(1) + H(1/4) + H(3/4)) / 4 ≈ 0.6556,

H the binary entropy in bits; they do not depend on t1 and t2. ``baseline`` (the
divergence guard's and progress line's) is ``no_memory``.

Randomness: ``next`` draws x ``[B]`` (an int in {0, 1}) and u ``[B]`` (uniform, y = [u <
p]) from the generator passed in, at every step; ``init`` draws the history ``[B, H]``;
every draw's first axis is the stream, so a shard's draws are its rows of the whole
batch's (:class:`ok_tf.sharding.ShardedGenerator`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing

import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base

#: Pitis's delays.
T1, T2 = 3, 8


def probability(first: float, second: float) -> float:
  """p = 1/2 + 1/2 · x_{t−t1} − 1/4 · x_{t−t2}: the target's probability of being 1."""
  return 0.5 + 0.5 * first - 0.25 * second


def binary_entropy(p: float) -> float:
  """H(p) = −p log2 p − (1 − p) log2 (1 − p), bits (H(0) = H(1) = 0)."""
  return -sum(q * math.log2(q) for q in (p, 1.0 - p) if q > 0.0)


def conditional_entropy(known: tuple[int, ...]) -> float:
  """The cross-entropy (bits) of the best predictor that knows the dependencies ``known``
  (indices into (x_{t−t1}, x_{t−t2})): E_known H(E[p | known]), the two inputs being
  independent Bernoulli(1/2)."""
  groups: dict[tuple, list[float]] = {}
  for pair in itertools.product((0, 1), repeat=2):
    groups.setdefault(tuple(pair[i] for i in known), []).append(probability(*pair))
  return sum(binary_entropy(sum(ps) / len(ps)) * len(ps) / 4 for ps in groups.values())


def baselines() -> dict[str, float]:
  """``no_memory``, ``first``, ``both``: :func:`conditional_entropy` of (), (0,), (0, 1)."""
  return {"no_memory": conditional_entropy(()), "first": conditional_entropy((0,)),
          "both": conditional_entropy((0, 1))}


class AdditiveState(typing.NamedTuple):
  """The streams' last H = max(t1, t2) inputs, oldest first, and the step count."""
  history: tf.Tensor  # [B, H] int32: x_{t−H} … x_{t−1}
  step: tf.Tensor     # [] int64: steps taken


@dataclasses.dataclass(frozen=True)
class AdditiveTask:
  """Additive dependencies on B streams; see the module docstring."""

  batch_size: int
  t1: int = T1
  t2: int = T2

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
    if min(self.t1, self.t2) < 1 or self.t1 == self.t2:
      raise ValueError(f"the delays must be two different positive integers, got t1={self.t1}, "
                       f"t2={self.t2}")

  @property
  def memory(self) -> int:
    """H = max(t1, t2): the inputs the targets depend on."""
    return max(self.t1, self.t2)

  @property
  def input_spec(self) -> specs.Symbols:
    return specs.Symbols(2)

  @property
  def output_spec(self) -> specs.Classes:
    return specs.Classes(2)

  @property
  def baselines(self) -> dict[str, float]:
    """no_memory ≈ 0.9544, first ≈ 0.7490, both ≈ 0.6556 bits (:func:`baselines`)."""
    return baselines()

  @property
  def baseline(self) -> float:
    return self.baselines["no_memory"]

  def shard(self, index: int, count: int) -> "AdditiveTask":
    """The same task with b = B/count streams (its draws: that shard's rows)."""
    return dataclasses.replace(self, batch_size=base.check_shard(self.batch_size, index, count))

  def describe(self) -> dict:
    return {**base.describe(self), "t1": self.t1, "t2": self.t2}

  def init(self, rng) -> AdditiveState:
    """The history of H inputs before step 0, drawn Bernoulli(1/2); step 0."""
    history = rng.uniform([self.batch_size, self.memory], minval=0, maxval=2, dtype=tf.int32)
    return AdditiveState(history=history, step=tf.constant(0, tf.int64))

  def next(self, state: AdditiveState, rng) -> tuple[AdditiveState, base.Data]:
    """x_t ~ Bernoulli(1/2), y_t = [u < p_t], u ~ U(0, 1); reset at step 0 only; weight 1."""
    b, h = self.batch_size, self.memory
    history = tf.ensure_shape(tf.convert_to_tensor(state.history, tf.int32), [b, h])
    inputs = rng.uniform([b], minval=0, maxval=2, dtype=tf.int32)
    u = rng.uniform([b], dtype=tf.float32)
    first = tf.cast(history[:, h - self.t1], tf.float32)
    second = tf.cast(history[:, h - self.t2], tf.float32)
    p = 0.5 + 0.5 * first - 0.25 * second
    targets = tf.cast(u < p, tf.int32)
    reset = tf.fill([b], tf.equal(state.step, 0))
    history = tf.concat([history[:, 1:], inputs[:, None]], axis=1)
    return (AdditiveState(history=history, step=state.step + 1),
            base.Data(inputs, targets, reset, base.full_weight(b)))

  def observe(self, state: AdditiveState, loss) -> AdditiveState:
    """No-op."""
    del loss
    return state

  def metrics(self, state: AdditiveState) -> dict[str, tf.Tensor]:
    """None: the loss beside the baselines says it all."""
    del state
    return {}


# ----------------------------------------------------------------------------- the entry


@dataclasses.dataclass
class AdditiveOptions:
  """The additive-dependencies task's own configuration (flags of ``--task=additive``)."""
  additive_t1: int = base.option(T1, "Additive dependencies: the first delay t1 (p_t = 1/2 + "
                                 "1/2 x_{t-t1} - 1/4 x_{t-t2}).")
  additive_t2: int = base.option(T2, "Additive dependencies: the second delay t2.")


PRESETS = {
    # Trying the code: a small tanh network that learns both dependencies in minutes on a CPU.
    "quick": dict(cell="tanh", units=32, rank=8, truncation=10, batch_size=16, lr=10 ** -2.5,
                  clip=1.0, steps=20_000, log_every=500, checkpoint_every=5_000),
    # The CPU-scale method study (results/tasks; `python -m analysis.study tasks_cpu`).
    "cpu": dict(cell="tanh", units=32, rank=8, truncation=10, batch_size=16, lr=10 ** -2.5,
                clip=1.0, steps=20_000, log_every=800, checkpoint_every=4_000),
}


def build(cfg, resume: bool) -> base.Setup:
  """The task of a run's config (B, t1, t2); results.json: the loss beside the baselines."""
  del resume
  task = AdditiveTask(batch_size=cfg.batch_size, t1=cfg.additive_t1, t2=cfg.additive_t2)
  return base.Setup(task)


def check(cfg) -> None:
  base.need(cfg.additive_t1 >= 1 and cfg.additive_t2 >= 1,
            f"--additive_t1 and --additive_t2 must be positive, got {cfg.additive_t1} and "
            f"{cfg.additive_t2}")
  base.need(cfg.additive_t1 != cfg.additive_t2,
            f"--additive_t1 and --additive_t2 must differ, both are {cfg.additive_t1}")


ENTRY = base.Entry(
    name="additive", help="additive dependencies (Pitis 2016): binary inputs, the target's "
    "probability set by the inputs t1 and t2 steps back (docs/tasks.md)",
    options=AdditiveOptions, presets=PRESETS, build=build, check=check)
