"""Next-symbol prediction on ``B`` streams through one text of token ids, in pure TensorFlow.

The online task of any text (docs/protocol.md, "Any text"); Penn Treebank's
(:mod:`ok_tf.tasks.ptb`) is this task on PTB's training ids with the published values:

* Stream ``b`` starts at offset ``o_b = floor(linspace(0, N - 1, B))[b]`` of the text
  of ``N`` symbols and advances by one symbol per step, wrapping around at the end.
  At each step its input is ``ids[p]`` and its target ``ids[(p + 1) mod N]``, where
  ``p`` is the stream's position.
* Stream ``b`` is *reset* (its hidden state and approximation state set to zero before
  the step) when its own position is a multiple of ``reset_every``:
  ``reset[b] = (p_b mod reset_every == 0)``. The streams start at different offsets, so
  they reset on different steps, each every ``reset_every`` symbols. Every stream also
  resets at step 0 (a no-op on the zero initial state, stated for clarity). With
  ``reset_every == 0`` the streams reset only at step 0. The default period,
  :data:`RESET_EVERY` = 100, is the published runs' (PTB); ``--reset_every`` and the
  configs take it from here.
* The text needs at least max(2, B) symbols (:func:`ok_tf.data.text.min_train_symbols`:
  one start offset per stream and a target for each) and fewer than 2^31 − 1 (int32
  positions); its ids pass :func:`ok_tf.data.text.check_ids`. A text that breaks a rule
  raises ``ValueError`` (:class:`ok_tf.data.text.TextDataError` for the rules of
  :mod:`ok_tf.data.text`) with one line saying what to do.

The text is a ``tf.constant`` made once; the methods use only TF ops with static
shapes, so they run inside ``tf.function`` / ``tf.while_loop`` without retracing. The
``(state, rng)`` signatures match the copy task's (:mod:`ok_tf.tasks.copy`); ``rng``
is unused: the streams are deterministic. An object may play a slice ``streams = (lo, hi)``
of the B streams only (rows lo … hi−1 of the whole batch; how multi-device training,
:func:`ok_tf.distributed.shard_task`, splits the batch).
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import tensorflow as tf

from ok_tf.data import text as text_data

#: The default reset period (symbols): the published runs' value.
RESET_EVERY = 100
#: Positions are int32: a text has fewer symbols than this.
MAX_SYMBOLS = 2**31 - 1


def stream_offsets(num_symbols: int, batch_size: int) -> np.ndarray:
  """Start positions of the streams: ``floor(linspace(0, N - 1, B))`` as int32 ``[B]``."""
  return np.floor(np.linspace(0, num_symbols - 1, batch_size)).astype(np.int32)


class TextStreamState(typing.NamedTuple):
  """State of :class:`TextStreams`: a NamedTuple of tensors (usable as a loop variable)."""

  position: tf.Tensor  # [B] int32: index of the next input symbol of each stream
  step: tf.Tensor  # [] int64: number of steps taken so far


@dataclasses.dataclass(frozen=True, eq=False)
class TextStreams:
  """``B`` streams through a text of token ids; see the module docstring for the protocol.

  Fields: the text ``ids`` (1-D integers), ``batch_size`` B, ``reset_every``,
  ``vocab_size`` and ``streams``. ``vocab_size`` should be passed (e.g.
  ``TextData.vocab_size``); if omitted it is taken as ``max(ids) + 1``, which is right for
  the training split only. ``streams = (lo, hi)`` plays streams lo … hi−1 of the B only
  (None: all). Derived in ``__post_init__``: ``num_symbols`` N, ``rows`` (the streams
  played: hi − lo, else B), ``offsets`` (``[rows]`` int32, their start positions) and
  ``text`` (the ids as a ``tf.constant``).
  """

  ids: np.ndarray = dataclasses.field(repr=False)
  batch_size: int
  reset_every: int = RESET_EVERY
  vocab_size: int | None = None
  streams: tuple[int, int] | None = None

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be ≥ 1 stream, got {self.batch_size}: give a "
                       "positive number of streams")
    ids = text_data.check_ids(self.ids, "ids")
    n = int(ids.size)
    text_data.check_train_length(n, self.batch_size, "the text")
    if n >= MAX_SYMBOLS:
      raise ValueError(f"the text has {n} symbols, too many for int32 positions: use fewer "
                       f"than {MAX_SYMBOLS} (e.g. its first part)")
    if self.reset_every < 0:
      raise ValueError(f"reset_every must be ≥ 0, got {self.reset_every}: give the reset "
                       "period in symbols (0: reset only at step 0)")
    max_id = int(ids.max())
    vocab_size = self.vocab_size
    if vocab_size is None:
      vocab_size = max_id + 1
    elif max_id >= vocab_size:
      raise ValueError(f"ids contain {max_id}, not below vocab_size={vocab_size}: pass a "
                       "vocab_size above every id (the training text's, TextData.vocab_size)")
    lo, hi = (0, self.batch_size) if self.streams is None else map(int, self.streams)
    if not 0 <= lo < hi <= self.batch_size:
      raise ValueError(f"streams must be (lo, hi) with 0 ≤ lo < hi ≤ {self.batch_size}, got "
                       f"{self.streams}: give such a slice of the B streams, or None for all")
    derived = {
        "ids": ids,
        "vocab_size": int(vocab_size),
        "batch_size": int(self.batch_size),
        "reset_every": int(self.reset_every),
        "streams": None if self.streams is None else (lo, hi),
        "rows": hi - lo,
        "num_symbols": n,
        "offsets": stream_offsets(n, self.batch_size)[lo:hi],
        "text": tf.constant(ids, dtype=tf.int32),
    }
    for name, value in derived.items():
      object.__setattr__(self, name, value)

  def init(self, rng: tf.random.Generator | None = None) -> TextStreamState:
    """Initial state: positions at the stream offsets, step 0."""
    del rng
    return TextStreamState(
        position=tf.constant(self.offsets, dtype=tf.int32),
        step=tf.constant(0, dtype=tf.int64),
    )

  def next(
      self, state: TextStreamState, rng: tf.random.Generator | None = None
  ) -> tuple[TextStreamState, tf.Tensor, tf.Tensor, tf.Tensor]:
    """One step: ``(new_state, inputs, targets, reset)``, ``[rows]`` int32, int32, bool.

    ``reset[b] = (p_b mod reset_every == 0) or step == 0`` with ``p_b`` the position
    of stream b's input symbol at this step.
    """
    del rng
    position = tf.ensure_shape(tf.convert_to_tensor(state.position, tf.int32), [self.rows])
    step = tf.convert_to_tensor(state.step, tf.int64)
    following = position + 1
    following = tf.where(following >= self.num_symbols, following - self.num_symbols, following)
    inputs = tf.gather(self.text, position)
    targets = tf.gather(self.text, following)
    first = tf.fill([self.rows], tf.equal(step, 0))
    if self.reset_every > 0:
      at_multiple = tf.equal(tf.math.floormod(position, self.reset_every), 0)
      reset = tf.logical_or(first, at_multiple)
    else:
      reset = first
    return TextStreamState(position=following, step=step + 1), inputs, targets, reset

  def observe(self, state: TextStreamState, loss_bits: tf.Tensor) -> TextStreamState:
    """No-op (the copy task uses this hook for its curriculum): returns ``state``."""
    del loss_bits
    return state

  def metrics(self, state: TextStreamState) -> dict[str, tf.Tensor]:
    """``{"epoch": steps * B / N}`` as a float32 scalar: passes of all B streams over the text."""
    epochs = tf.cast(state.step, tf.float64) * (self.batch_size / self.num_symbols)
    return {"epoch": tf.cast(epochs, tf.float32)}
