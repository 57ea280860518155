"""Next-symbol prediction on ``B`` streams through one text of token ids, in pure TensorFlow.

The online task of any text (docs/protocol.md, "Any text"); Penn Treebank's (the entry
:data:`PTB`, task ``ptb``) is this task on PTB's training ids with the published values:

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
:func:`ok_tf.sharding.shard_task`, splits the batch).
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import tensorflow as tf

from ok_tf import estimators
from ok_tf import evaluation
from ok_tf import models
from ok_tf import runs
from ok_tf import specs
from ok_tf import validation as validation_lib
from ok_tf.data import ptb
from ok_tf.data import text as text_data
from ok_tf.tasks import base

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

  @property
  def input_spec(self) -> specs.Symbols:
    return specs.Symbols(self.vocab_size)

  @property
  def output_spec(self) -> specs.Classes:
    return specs.Classes(self.vocab_size)

  @property
  def baselines(self) -> dict[str, float]:
    """``uniform``: log2 V bits, a uniform guess of the V symbols."""
    return {"uniform": base.uniform_bits(self.vocab_size)}

  @property
  def baseline(self) -> float:
    return self.baselines["uniform"]

  def shard(self, index: int, count: int) -> "TextStreams":
    """The slice ``streams`` of shard ``index`` of ``count`` of these B streams (same
    text, offsets and epoch count)."""
    b = base.check_shard(self.batch_size, index, count)
    if count == 1:
      return self
    return dataclasses.replace(self, streams=(index * b, (index + 1) * b))

  def describe(self) -> dict:
    return {**base.describe(self), "num_symbols": self.num_symbols,
            "reset_every": self.reset_every}

  def init(self, rng: tf.random.Generator | None = None) -> TextStreamState:
    """Initial state: positions at the stream offsets, step 0."""
    del rng
    return TextStreamState(
        position=tf.constant(self.offsets, dtype=tf.int32),
        step=tf.constant(0, dtype=tf.int64),
    )

  def next(self, state: TextStreamState,
           rng: tf.random.Generator | None = None) -> tuple[TextStreamState, base.Data]:
    """One step: ``(new_state, Data(inputs, targets, reset, weight))``, ``[rows]`` int32,
    int32, bool and float32 ones (every symbol's loss counts).

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
    return (TextStreamState(position=following, step=step + 1),
            base.Data(inputs, targets, reset, base.full_weight(self.rows)))

  def observe(self, state: TextStreamState, loss_bits: tf.Tensor) -> TextStreamState:
    """No-op (the copy task uses this hook for its curriculum): returns ``state``."""
    del loss_bits
    return state

  def metrics(self, state: TextStreamState) -> dict[str, tf.Tensor]:
    """``{"epoch": steps * B / N}`` as a float32 scalar: passes of all B streams over the text."""
    epochs = tf.cast(state.step, tf.float64) * (self.batch_size / self.num_symbols)
    return {"epoch": tf.cast(epochs, tf.float32)}


# ----------------------------------------------------------------------------- the entries


@dataclasses.dataclass
class TextOptions:
  """The own configuration of the text tasks, ``ptb`` and ``text`` (their flags)."""
  data_dir: str = base.option(
      "", "PTB: folder with the character files (default: $OK_TF_DATA, then TensorFlow "
      "Datasets' manual-download folder <$TFDS_DATA_DIR or ~/tensorflow_datasets>/downloads/manual).")
  tokenization: str = base.option(
      "published", "PTB: the symbol stream, the published code's or whitespace + end of "
      "line (a text records its own: characters, or ids for a .npy file).",
      choices=("published", "whitespace_eol", "characters", "ids"), distinguishes=True)
  reset_every: int = base.option(RESET_EVERY, "Reset state every this many characters (0: never).",
                                 distinguishes=True)
  eval_every: int = base.option(10_000, "Steps between validation evaluations.",
                                resume="may_change")
  eval_streams: int = base.option(8, "Contiguous streams the evaluation text is cut into.")
  train_file: str = base.option(
      "", "Train on this text instead of PTB: a UTF-8 file, one symbol per character, or "
      "token ids as a 1-D integer array in a .npy file (docs/protocol.md, \"Any text\").", absent="")
  valid_file: str = base.option(
      "", "With --train_file: the validation text (its BPC every --eval_every steps, the "
      "best checkpoint); none without it.", absent="")
  test_file: str = base.option(
      "", "With --train_file: the test text, evaluated at the end (best checkpoint, else "
      "the last).", absent="")
  train_sha256: str = base.option(
      "", "The training text's fingerprint, recorded by the run (set automatically).",
      absent="", distinguishes=True)


# The PTB configurations (also any text's). Purpose and sizes: docs/protocol.md, "The presets".
PRESETS = {
    # Trying the code: minutes on a CPU, with a validation evaluation every 10k steps.
    "quick": dict(units=64, rank=8, truncation=25, batch_size=32, lr=10 ** -2.5,
                  clip=100.0, steps=40_000, log_every=1000, checkpoint_every=10_000,
                  eval_every=10_000),
    # The CPU-scale study (`python -m analysis.study ptb_cpu`, results/ptb): n 64 and 150k
    # steps (4.8M characters, about one pass over the training text), so that the
    # five-method study (ok, kf, uoro, tbptt T 25 and T 100) fits a few hours on 2 CPU
    # cores (wall times in results/README.md).
    "cpu": dict(units=64, rank=8, truncation=25, batch_size=32, lr=10 ** -3,
                clip=100.0, steps=150_000, log_every=1000, checkpoint_every=10_000,
                eval_every=10_000),
    # The published configuration (docs/protocol.md, "The published configurations and
    # results": n 256, B 32, r 8, lr 10^-3.5, published gradient scale); meant for a GPU.
    "paper": dict(units=256, rank=8, truncation=25, batch_size=32, lr=10 ** -3.5,
                  clip=100.0, grad_scale="published", steps=1_000_000, log_every=1000,
                  checkpoint_every=10_000, eval_every=10_000),
}


def load_data(cfg):
  """PTB's splits or, with ``train_file``, the text, as a :class:`~ok_tf.data.text.TextData`
  (token ids, ``vocabulary``, ``vocab_size``)."""
  if not cfg.train_file:
    return ptb.load_ptb(ptb.resolve_data_dir(cfg.data_dir or None), cfg.tokenization)
  data = text_data.load_text(cfg.train_file, cfg.valid_file or None, cfg.test_file or None)
  data.check_batch_size(cfg.batch_size)
  return data


def train_fingerprint(cfg, data, resume: bool) -> str:
  """The ``train_sha256`` a run of ``cfg`` records: ``data.train_sha256`` for a text, ""
  for PTB (its files are checksummed). Resuming, a recorded fingerprint must be the
  text's: :class:`ok_tf.runs.RunDirError` otherwise. A resumed run that records none
  keeps none (its vocabulary is still checked)."""
  if not cfg.train_file:
    return ""
  if resume and runs.is_run(cfg.run_dir):
    recorded = runs.Run(cfg.run_dir).config.get("train_sha256") or ""
    if not recorded:
      return ""
    if recorded != data.train_sha256:
      raise runs.RunDirError(
          f"the training text of the run in {cfg.run_dir} has changed (sha256 {recorded[:12]}… "
          f"recorded, {data.train_sha256[:12]}… in --train_file={cfg.train_file}): resume it "
          "with the same training text, or choose another --run_dir")
  return data.train_sha256


def build(cfg, resume: bool) -> base.Setup:
  """PTB's or a text's streams, validation every ``eval_every`` steps on the validation
  text (if any), and results.json: the best and last validation BPC and the test BPC at
  the best checkpoint (without validation: at the last one; null without a test text)."""
  data = load_data(cfg)
  cfg = dataclasses.replace(cfg, train_sha256=train_fingerprint(cfg, data, resume))
  task = TextStreams(data.train, cfg.batch_size, cfg.reset_every, data.vocab_size)
  validation = None
  if data.valid is not None:
    validation = validation_lib.Validation(data.valid, cfg.eval_every, cfg.steps,
                                           cfg.batch_size, cfg.eval_streams)

  def results(run) -> dict:
    best_step, best = validation.best if validation else (None, None)
    final = validation.last[1] if validation else None
    final_step = int(run.metrics[-1]["step"])
    test_bpc = None
    if data.test is not None:
      model, _ = models.load_run_model(run, "best" if validation else "latest",
                                       vocab_size=data.vocab_size)
      test_bpc = evaluation.Evaluator(model, data.test, cfg.eval_streams).bpc()
    wall = float(run.metrics[-1]["wall_time"])
    return {
        "best_valid_bpc": best, "best_step": best_step, "final_valid_bpc": final,
        "test_bpc": test_bpc, "final_step": final_step, "chars": final_step * cfg.batch_size,
        "wall_time": wall, "steps_per_sec": final_step / wall if wall > 0 else None,
        "tokenization": cfg.tokenization,
        "method": estimators.label(cfg.method, cfg.rank, cfg.truncation),
    }

  return base.Setup(task, config=cfg, validation=validation, vocabulary=data.vocabulary,
                    results=results)


def check(cfg) -> None:
  """The rules of the text tasks' fields (one line each)."""
  need = base.need
  need(cfg.reset_every >= 0, f"--reset_every must be ≥ 0, got {cfg.reset_every}")
  need(cfg.eval_every >= 1 and cfg.eval_every % cfg.log_every == 0,
       f"--eval_every ({cfg.eval_every}) must be a positive multiple of --log_every ({cfg.log_every})")
  need(cfg.eval_streams >= 1, f"--eval_streams must be positive, got {cfg.eval_streams}")
  need(cfg.train_file or not (cfg.valid_file or cfg.test_file),
       "--valid_file and --test_file go with --train_file (PTB has its own); add --train_file")


#: The errors of :func:`load_data` that mean bad input: one line, no traceback.
DATA_ERRORS = (ptb.PtbDataMissingError, ptb.PtbChecksumError, text_data.TextDataError)


def check_text(cfg) -> None:
  """The text task's rules: a training text, and :func:`check`'s."""
  base.need(bool(cfg.train_file), "--task=text needs --train_file (the text to train on)")
  check(cfg)


ENTRY = base.Entry(
    name="text", help="any text file (or .npy token ids): next-symbol prediction on B "
    "streams, validation BPC with --valid_file (--train_file; docs/protocol.md)",
    options=TextOptions, presets=PRESETS, build=build, errors=DATA_ERRORS,
    check=check_text)


# Character-level Penn Treebank (docs/protocol.md): the text task on PTB's files, as in the
# published runs (offsets floor(linspace(0, N − 1, B)), resets every RESET_EVERY = 100
# symbols, validation BPC every eval_every steps, test BPC at the best checkpoint).
PTB = base.Entry(
    name="ptb", help="character-level Penn Treebank (the paper's; docs/protocol.md); "
    "--train_file trains on any text instead (task text)",
    options=TextOptions, presets=PRESETS, build=build, errors=DATA_ERRORS,
    check=check)
