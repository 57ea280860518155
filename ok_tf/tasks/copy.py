"""Copy task (string memorisation) with a curriculum, in pure TensorFlow.

Protocol (docs/protocol.md, "Copy task"), as in the published runs:

* Alphabet of ``VOCAB_SIZE = 4`` symbols: bits ``0`` and ``1``, start marker
  ``START = 2`` and blank ``BLANK = 3``.
* A sequence of ``L`` bits ``b_1 .. b_L`` takes ``2L + 2`` steps::

      input  = [2, b_1 .. b_L, 3 x (L+1)]
      target = [3 x (L+1), 2, b_1 .. b_L]

  The loss (cross-entropy in bits) counts every step, blanks included.
* Curriculum: the level ``T`` starts at 1. An exponential moving average of the
  per-step loss in bits (decay 0.999 per step, initial value 1.0) is kept; when
  it drops below 0.15 bits, ``T <- T + 1`` and the average is set back to 0.3.
* Every new sequence draws its length as ``L = max(1, T - U)`` with ``U`` uniform on
  ``{0, ..., length_window - 1}`` (``length_window = 5``) and the *current* level ``T``,
  and fresh uniform random bits. For ``T >= 5`` this is uniform on ``{T - 4, ..., T}``;
  below, the clipping puts the mass of ``U >= T`` on length 1 (at ``T = 2``: length 1
  with probability 0.8), as the published code's ``max(1, T - randint(5))``.
* The ``B`` streams of a batch run asynchronously: when a stream's sequence has
  ended, it draws a new one at its next step, and the trainer resets that
  stream's hidden state and approximation state to zero before the step
  (``reset[b]`` is True exactly at the first step of a sequence).

Usage by an online trainer (once per time step, inside a compiled loop; the protocol of
:mod:`ok_tf.tasks.base`)::

    state = task.init(rng)
    ...
    state, data = task.next(state, rng)   # inputs, targets [B] int32, reset [B] bool, weight 1
    # zero hidden/approximation state of streams with reset, run the step,
    # compute loss_bits = batch-mean cross-entropy of this step in bits
    state = task.observe(state, loss_bits)

Symbols in, classes out (V = K = 4); every step's loss counts (weight 1). The registry's
entry :data:`ENTRY` (task ``copy``) holds its flag ``--max_length``, its presets and
its results.json.

All methods are pure TensorFlow with static shapes (no numpy, py_function or
Python control flow on tensor values), so they can run inside ``tf.function``
/ ``tf.while_loop`` without retracing; :class:`CopyState` is a NamedTuple of
tensors, usable as a loop variable and checkpointable through ``tf.Variable``
copies of its fields. All randomness comes from the ``tf.random.Generator``
passed in, so a run is reproducible from the generator's state. Note that
``next`` draws a fresh length and a full ``[B, max_length]`` block of bits for
every stream at every step (only the finished streams use them), so the
generator advances by the same amount at every step, whatever the streams do.

Capacity: the bit buffer holds ``max_length`` bits (default 512), and the
level never grows beyond ``max_length``: once ``T == max_length``, a crossing
of the threshold still resets the average to ``ema_after_increase`` but leaves
``T`` unchanged.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base

START = 2
BLANK = 3
VOCAB_SIZE = 4


def sequence(bits) -> tuple[np.ndarray, np.ndarray]:
  """Input and target symbols (int32 arrays of length 2L+2) for one sequence of bits."""
  bits = np.asarray(bits, dtype=np.int32).reshape(-1)
  if bits.size and not np.all((bits == 0) | (bits == 1)):
    raise ValueError("bits must be 0 or 1")
  length = bits.size
  blanks = np.full(length + 1, BLANK, dtype=np.int32)
  inputs = np.concatenate([[START], bits, blanks]).astype(np.int32)
  targets = np.concatenate([blanks, [START], bits]).astype(np.int32)
  return inputs, targets


class CopyState(typing.NamedTuple):
  """State of the copy task for a batch of ``B`` asynchronous streams."""

  bits: tf.Tensor  # [B, max_length] int32: the current sequence's bits in the first L slots (0 after)
  length: tf.Tensor  # [B] int32: L of the current sequence
  position: tf.Tensor  # [B] int32: next step to emit, 0 .. 2L+1; 2L+2 means finished
  level: tf.Tensor  # [] int32: curriculum level T (starts at 1)
  ema: tf.Tensor  # [] float32: EMA of the per-step loss in bits (starts at 1.0)


@dataclasses.dataclass(frozen=True)
class CopyTask:
  """The copy task with curriculum; see the module docstring for the protocol."""

  batch_size: int
  max_length: int = 512  # capacity of the bit buffer; the level never exceeds it
  ema_decay: float = 0.999
  threshold: float = 0.15
  ema_after_increase: float = 0.3
  initial_ema: float = 1.0
  length_window: int = 5  # lengths max(1, T - U), U uniform in {0, ..., length_window - 1}

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {self.max_length}")
    if self.length_window < 1:
      raise ValueError(f"length_window must be >= 1, got {self.length_window}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

  @property
  def vocab_size(self) -> int:
    return VOCAB_SIZE

  @property
  def input_spec(self) -> specs.Symbols:
    return specs.Symbols(VOCAB_SIZE)

  @property
  def output_spec(self) -> specs.Classes:
    return specs.Classes(VOCAB_SIZE)

  @property
  def baselines(self) -> dict[str, float]:
    """``uniform``: log2 4 = 2 bits, a uniform guess of the four symbols."""
    return {"uniform": base.uniform_bits(VOCAB_SIZE)}

  @property
  def baseline(self) -> float:
    return self.baselines["uniform"]

  def shard(self, index: int, count: int) -> "CopyTask":
    """The same task with b = B/count streams: its draws come from a generator that keeps
    one shard's rows of the whole batch's (:class:`ok_tf.sharding.ShardedGenerator`),
    and it observes the mean loss over all shards, so every shard keeps one curriculum."""
    return dataclasses.replace(self, batch_size=base.check_shard(self.batch_size, index, count))

  def describe(self) -> dict:
    return {**base.describe(self), "max_length": self.max_length}

  def init(self, rng: tf.random.Generator) -> CopyState:
    """Initial state: every stream finished (so the first ``next`` draws), level 1, EMA 1.0.

    ``rng`` is accepted for a uniform interface; ``init`` draws nothing from it.
    """
    del rng
    b = self.batch_size
    length = tf.zeros([b], tf.int32)
    return CopyState(
        bits=tf.zeros([b, self.max_length], tf.int32),
        length=length,
        position=2 * length + 2,  # finished
        level=tf.constant(1, tf.int32),
        ema=tf.constant(self.initial_ema, tf.float32),
    )

  def next(self, state: CopyState, rng: tf.random.Generator) -> tuple[CopyState, base.Data]:
    """One time step for every stream: ``(new_state, Data(inputs, targets, reset, 1))``.

    Finished streams first draw a new sequence (length ``max(1, T - U)``, ``U``
    uniform on ``{0, ..., length_window - 1}``, with the current level ``T``; fresh bits) at
    position 0; then every stream emits the input/target at its position;
    ``reset[b]`` is True exactly when stream ``b`` emits position 0; then the
    positions advance by one.
    """
    b, m = self.batch_size, self.max_length
    level = tf.convert_to_tensor(state.level, tf.int32)
    shortfall = rng.uniform([b], minval=0, maxval=self.length_window, dtype=tf.int32)
    new_length = tf.maximum(1, level - shortfall)
    slots = tf.range(m, dtype=tf.int32)
    new_bits = rng.uniform([b, m], minval=0, maxval=2, dtype=tf.int32)
    new_bits = tf.where(slots[None, :] < new_length[:, None], new_bits, 0)

    finished = state.position >= 2 * state.length + 2
    length = tf.where(finished, new_length, state.length)
    bits = tf.where(finished[:, None], new_bits, state.bits)
    position = tf.where(finished, 0, state.position)

    p, n = position, length
    start = tf.fill([b], tf.constant(START, tf.int32))
    blank = tf.fill([b], tf.constant(BLANK, tf.int32))
    # Input: START at 0, b_p at 1..L, BLANK after.
    in_bit = tf.gather(bits, tf.clip_by_value(p - 1, 0, m - 1), batch_dims=1)
    inputs = tf.where(p == 0, start, tf.where(p <= n, in_bit, blank))
    # Target: BLANK at 0..L, START at L+1, b_{p-L-1} at L+2..2L+1.
    out_bit = tf.gather(bits, tf.clip_by_value(p - n - 2, 0, m - 1), batch_dims=1)
    targets = tf.where(p <= n, blank, tf.where(p == n + 1, start, out_bit))
    reset = tf.equal(p, 0)

    new_state = CopyState(
        bits=bits, length=length, position=position + 1, level=level, ema=state.ema
    )
    return new_state, base.Data(inputs, targets, reset, base.full_weight(b))

  def observe(self, state: CopyState, loss_bits) -> CopyState:
    """Update the EMA with this step's batch-mean loss in bits, and the level.

    ``ema <- decay * ema + (1 - decay) * loss_bits``; if ``ema < threshold``,
    ``level <- min(level + 1, max_length)`` and ``ema <- ema_after_increase``.
    """
    loss_bits = tf.cast(loss_bits, tf.float32)
    ema = tf.constant(self.ema_decay, tf.float32) * state.ema + tf.constant(
        1.0 - self.ema_decay, tf.float32
    ) * loss_bits
    crossed = ema < tf.constant(self.threshold, tf.float32)
    level = tf.where(
        crossed, tf.minimum(state.level + 1, self.max_length), state.level
    )
    ema = tf.where(crossed, tf.constant(self.ema_after_increase, tf.float32), ema)
    return state._replace(level=level, ema=ema)

  def metrics(self, state: CopyState) -> dict[str, tf.Tensor]:
    """Scalars to log: the curriculum level and the loss EMA in bits."""
    return {"level": state.level, "ema_bits": state.ema}


# ----------------------------------------------------------------------------- the entry


@dataclasses.dataclass
class CopyOptions:
  """The copy task's own configuration (flags of ``--task=copy``)."""
  max_length: int = base.option(512, "Largest curriculum level the task can reach.")


PRESETS = {
    # Purpose and sizes of every preset: docs/protocol.md, "The presets".
    # Trying the code: a small RHN on which OK passes curriculum level 10 within minutes
    # on a CPU.
    "quick": dict(units=32, rank=8, truncation=25, batch_size=16, lr=10 ** -2.5,
                  clip=1.0, steps=60_000, log_every=1000, checkpoint_every=10_000),
    # The CPU-scale method study (`python -m analysis.study copy_cpu`, results/copy): an
    # RHN small enough for the study's 11 runs to fit a few hours on 2 CPU cores (wall
    # times in results/README.md).
    "cpu": dict(units=64, rank=16, truncation=25, batch_size=16, lr=10 ** -2.5,
                clip=1.0, steps=100_000, log_every=1000, checkpoint_every=10_000),
    # The published configuration (docs/protocol.md, "The published configurations and
    # results": n 128, B 16, r 16, lr 10^-3.5, published gradient scale); meant for a GPU.
    "paper": dict(units=128, rank=16, truncation=25, batch_size=16, lr=10 ** -3.5,
                  clip=1.0, grad_scale="published", steps=2_000_000, log_every=1000,
                  checkpoint_every=20_000),
}


def results(run) -> dict:
  """results.json: the last and highest curriculum level, the loss EMA, steps and time."""
  rows = run.metrics
  last, wall = rows[-1], float(rows[-1]["wall_time"])
  return {
      "level": last["level"], "max_level": max(int(r["level"]) for r in rows),
      "ema_bits": last["ema_bits"], "steps": last["step"], "chars": last["chars"],
      "wall_time": wall, "steps_per_sec": last["step"] / wall if wall > 0 else None,
  }


def build(cfg, resume: bool) -> base.Setup:
  """The copy task of a run's config (B, max_length) and its results."""
  del resume
  return base.Setup(CopyTask(batch_size=cfg.batch_size, max_length=cfg.max_length),
                    results=results)


def check(cfg) -> None:
  base.need(cfg.max_length >= 1, f"--max_length must be positive, got {cfg.max_length}")


ENTRY = base.Entry(
    name="copy", help="the copy task with curriculum (the paper's; docs/protocol.md)",
    options=CopyOptions, presets=PRESETS, build=build, check=check)
