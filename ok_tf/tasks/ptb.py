"""Character-level Penn Treebank: the text task (:mod:`ok_tf.tasks.text`) on PTB's files.

Protocol (docs/protocol.md, "Character-level Penn Treebank"), as in the published runs:
B streams through the training text of :func:`ok_tf.data.ptb.load_ptb`, stream b from
offset ``floor(linspace(0, N − 1, B))[b]``, each reset whenever its own position is a
multiple of ``reset_every`` = 100 (:data:`ok_tf.tasks.text.RESET_EVERY`); validation BPC
every ``eval_every`` steps, test BPC at the best checkpoint. That is
:class:`~ok_tf.tasks.text.TextStreams` with these values: :func:`streams` makes it, and
:data:`ENTRY` (task ``ptb``) is the registry's, with the text task's flags and presets.

``PtbStreams``, ``PtbStreamState``, ``stream_offsets`` and ``RESET_EVERY`` are aliases,
the very objects :class:`~ok_tf.tasks.text.TextStreams`,
:class:`~ok_tf.tasks.text.TextStreamState`, :func:`~ok_tf.tasks.text.stream_offsets` and
:data:`~ok_tf.tasks.text.RESET_EVERY`, kept for code that names PTB.
"""

from __future__ import annotations

from ok_tf.data import ptb
from ok_tf.tasks import base
from ok_tf.tasks import text

PtbStreams = text.TextStreams
PtbStreamState = text.TextStreamState
stream_offsets = text.stream_offsets
RESET_EVERY = text.RESET_EVERY


def streams(data: ptb.PtbData, batch_size: int, reset_every: int = RESET_EVERY) -> text.TextStreams:
  """The training streams of ``data`` (a :class:`ok_tf.data.ptb.PtbData`): B streams
  through ``data.train`` over its 50 symbols."""
  return text.TextStreams(data.train, batch_size, reset_every, data.vocab_size)


ENTRY = base.Entry(
    name="ptb", help="character-level Penn Treebank (the paper's; docs/protocol.md); "
    "--train_file trains on any text instead (task text)",
    options=text.TextOptions, presets=text.PRESETS, build=text.build, errors=text.DATA_ERRORS,
    check=text.check)
