"""Any text as a character-level task: a training text, optional validation and test texts.

The one container of texts, :class:`TextData`, for any text and for PTB
(:func:`ok_tf.data.ptb.load_ptb`, which adds only PTB's files, checksums and tokenisations).
Symbols (docs/protocol.md, "Any text"): the Unicode characters of the training text,
read as UTF-8 and kept unchanged (case, spaces, line ends), numbered in order of first
appearance in it (:func:`first_appearance_order`), as PTB's are. The validation and test
texts may use only those characters. Instead of text, token ids: a ``.npy`` file holding a 1-D array of
non-negative integers (``numpy.save``), or integer arrays through :func:`from_ids`; their
symbols are the ids 0 … V−1, V = 1 + the largest id of the training array (at most
:data:`MAX_VOCAB_SIZE`), printed as decimal numbers separated by spaces. All files of a
task are text, or all are ``.npy``.

Lengths: an evaluated (validation or test) text needs :data:`MIN_SYMBOLS` = 2 symbols, one
input and its target; a training text read by B streams needs max(2, B)
(:func:`min_train_symbols`). :func:`check_ids`, :func:`check_train_length` and
:func:`check_eval_length` state these rules once, for the loader and for the streams
(:class:`ok_tf.tasks.text.TextStreams`).

:func:`load_text` reads the files of ``--train_file``, ``--valid_file``, ``--test_file``;
:func:`from_text` and :func:`from_ids` take the texts themselves. Each returns a
:class:`TextData` (token ids, :class:`ok_tf.data.vocabulary.Vocabulary`), whose training
streams are :class:`ok_tf.tasks.text.TextStreams`. A text that cannot be used raises
:class:`TextDataError` with one line saying what is wrong and what to do: a file that does
not exist, is empty, is not UTF-8 text (bytes that do not decode, or NUL bytes), holds an
array that is not 1-D non-negative integers, ids beyond :data:`MAX_VOCAB_SIZE`, a
validation or test text with symbols the training text lacks, or a text too short for its
use. ``TextData.train_sha256`` fingerprints the training text; a run records it, so that
``--resume`` refuses a changed text. Numpy only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Optional

import numpy as np

from ok_tf.data import vocabulary as vocabulary_lib

#: Suffix of a file of token ids; any other file is read as text.
IDS_SUFFIX = ".npy"
#: The tokenisation a task records: one symbol per character, or given token ids.
CHARACTERS, IDS = "characters", "ids"
#: The flag naming each split's file, for messages.
FLAGS = {"train": "--train_file", "valid": "--valid_file", "test": "--test_file"}
#: Fewest symbols of a text that holds one prediction (an input and its target): what an
#: evaluated text needs, and the least a training text needs (:func:`min_train_symbols`).
MIN_SYMBOLS = 2
#: Largest number of symbols V: the model's one-hot input and its softmax are V wide.
MAX_VOCAB_SIZE = 2**20


class TextDataError(ValueError):
  """A training, validation or test text cannot be used (the message says what to do)."""


@dataclasses.dataclass(frozen=True)
class TextData:
  """Token ids of the splits (int32; ``valid``, ``test`` None when not given), the
  vocabulary, the tokenisation (``"characters"`` or ``"ids"``; PTB's,
  :func:`ok_tf.data.ptb.load_ptb`, one of :data:`ok_tf.data.ptb.TOKENIZATIONS`) and
  ``train_sha256``, the fingerprint of the training text that a run records (config
  ``train_sha256``): the SHA-256 (hex) of the text's UTF-8 bytes, which are its file's
  bytes (``sha256sum FILE``; PTB: its training file's); for token ids, of the ids as
  little-endian int32 (whatever integer type the file holds).
  """

  train: np.ndarray
  valid: Optional[np.ndarray]
  test: Optional[np.ndarray]
  vocabulary: vocabulary_lib.Vocabulary
  tokenization: str
  train_sha256: str = ""

  @property
  def vocab_size(self) -> int:
    """V, the number of symbols."""
    return self.vocabulary.size

  def split(self, name: str) -> np.ndarray:
    """The ids of split ``name`` (``"train"``, ``"valid"`` or ``"test"``);
    :class:`TextDataError` if it is not one or was not given."""
    if name not in FLAGS:
      raise TextDataError(f"unknown split {name!r}: choose one of {', '.join(FLAGS)}")
    ids = getattr(self, name)
    if ids is None:
      raise TextDataError(f"this text has no {name} split: give {FLAGS[name]}")
    return ids

  def check_batch_size(self, batch_size: int) -> None:
    """Raise :class:`TextDataError` unless the training text can feed ``batch_size``
    streams (:func:`check_train_length`)."""
    check_train_length(self.train.size, batch_size)


def min_train_symbols(batch_size: int) -> int:
  """Fewest symbols of a training text for ``batch_size`` streams: max(2, B), one start
  offset per stream and a target for each."""
  return max(MIN_SYMBOLS, int(batch_size))


def check_train_length(num_symbols: int, batch_size: int,
                       name: str = "the training text") -> None:
  """Raise :class:`TextDataError` unless ``num_symbols`` ≥ :func:`min_train_symbols` (B)."""
  need = min_train_symbols(batch_size)
  if num_symbols < need:
    raise TextDataError(
        f"{name} has {num_symbols} symbols, too short for {batch_size} streams (they need at "
        f"least {need}): use a longer text or a smaller --batch_size")


def check_eval_length(num_symbols: int, name: str) -> None:
  """Raise :class:`TextDataError` unless ``num_symbols`` ≥ :data:`MIN_SYMBOLS` (an
  evaluated text holds at least one prediction)."""
  if num_symbols < MIN_SYMBOLS:
    raise TextDataError(f"{name} has {num_symbols} symbol; evaluating it needs at least "
                        f"{MIN_SYMBOLS}: give a longer text")


def tokenization_of(path: str | os.PathLike) -> str:
  """``"ids"`` for a ``.npy`` file, else ``"characters"``."""
  return IDS if pathlib.Path(path).suffix.lower() == IDS_SUFFIX else CHARACTERS


def _existing(path: str | os.PathLike, split: str) -> pathlib.Path:
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    what = "is a folder" if path.is_dir() else "does not exist"
    raise TextDataError(f"{FLAGS[split]}={path} {what}: give the path of a file")
  return path


def read_text(path: str | os.PathLike, split: str = "train") -> str:
  """The text of a UTF-8 file; :class:`TextDataError` if it is missing, empty or not text."""
  path = _existing(path, split)
  data = path.read_bytes()
  advice = ("give a UTF-8 text file, or token ids as a 1-D integer array saved with "
            "numpy.save (.npy)")
  if not data:
    raise TextDataError(f"{FLAGS[split]}={path} is empty: give a file that holds text")
  nul = data.find(b"\0")
  if nul >= 0:
    raise TextDataError(f"{FLAGS[split]}={path} is not text (a NUL byte at offset {nul}): {advice}")
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise TextDataError(f"{FLAGS[split]}={path} is not UTF-8 text (byte 0x{data[e.start]:02x} "
                        f"at offset {e.start} does not decode): {advice}") from None


def read_ids(path: str | os.PathLike, split: str = "train") -> np.ndarray:
  """The token ids of a ``.npy`` file (int32); :class:`TextDataError` unless it holds a
  non-empty 1-D array of non-negative integers."""
  path = _existing(path, split)
  try:
    ids = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise TextDataError(f"{FLAGS[split]}={path} is not a numpy array file ({e}): save the "
                        "token ids with numpy.save, or give a text file without .npy") from None
  return check_ids(ids, f"{FLAGS[split]}={path}")


def check_ids(ids, name: str) -> np.ndarray:
  """``ids`` as int32; :class:`TextDataError` (naming them ``name``) unless they are a
  non-empty 1-D array of integers in 0 … 2^31 − 2."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise TextDataError(f"{name} holds an array of shape {ids.shape} and dtype {ids.dtype}: "
                        "give a 1-D array of non-negative integer token ids")
  if ids.size == 0:
    raise TextDataError(f"{name} holds no token ids: give a non-empty array")
  if ids.min() < 0 or ids.max() >= 2**31 - 1:
    raise TextDataError(f"{name} holds ids outside 0 … 2^31 − 2 (from {ids.min()} to "
                        f"{ids.max()}): number the symbols 0, 1, 2, …")
  return ids.astype(np.int32)


def first_appearance_order(codes: np.ndarray) -> np.ndarray:
  """The distinct values of ``codes`` in order of first appearance (how a text's
  symbols, and PTB's, are numbered)."""
  values, first = np.unique(codes, return_index=True)
  return values[np.argsort(first, kind="stable")]


def character_vocabulary(text: str) -> vocabulary_lib.Vocabulary:
  """The characters of ``text`` in order of first appearance."""
  order = first_appearance_order(vocabulary_lib.code_points(text))
  return vocabulary_lib.Vocabulary(tuple(map(chr, order.tolist())))


def ids_vocabulary(vocab_size: int) -> vocabulary_lib.Vocabulary:
  """Symbols ``"0"`` … ``"V−1"``, printed separated by spaces."""
  return vocabulary_lib.Vocabulary(tuple(str(i) for i in range(int(vocab_size))), separator=" ")


def from_text(train: str, valid: Optional[str] = None, test: Optional[str] = None,
              names: Optional[dict] = None) -> TextData:
  """The character-level task of the texts themselves (``names``: split → how messages
  name it, default the flags)."""
  names = {**FLAGS, **(names or {})}
  if not train:
    raise TextDataError(f"{names['train']}: the training text is empty: give one that holds text")
  vocabulary = character_vocabulary(train)
  ids = {"train": vocabulary.encode(train)}
  for split, text in (("valid", valid), ("test", test)):
    if text is None:
      continue
    if not text:
      raise TextDataError(f"{names[split]} is empty: give a file that holds text, or leave it out")
    try:
      ids[split] = vocabulary.encode(text)
    except vocabulary_lib.UnknownSymbolsError as e:
      raise TextDataError(
          f"{names[split]} has {len(e.unknown)} characters that the training text lacks "
          f"({vocabulary_lib.describe(e.unknown)}; {e.count} occurrences): add text holding "
          "them to the training file, or take this text from the same source") from None
    check_eval_length(ids[split].size, names[split])
  return TextData(ids["train"], ids.get("valid"), ids.get("test"), vocabulary, CHARACTERS,
                  hashlib.sha256(train.encode("utf-8")).hexdigest())


def from_ids(train, valid=None, test=None, names: Optional[dict] = None) -> TextData:
  """The task of token-id arrays: V = 1 + max(train) ≤ :data:`MAX_VOCAB_SIZE`; valid/test
  ids must be below V."""
  names = {**FLAGS, **(names or {})}
  train = check_ids(train, names["train"])
  vocab_size = int(train.max()) + 1
  if vocab_size > MAX_VOCAB_SIZE:
    raise TextDataError(
        f"{names['train']} has ids up to {vocab_size - 1}, so V = {vocab_size:,} symbols, more "
        f"than {MAX_VOCAB_SIZE:,} (the model's one-hot input and softmax are V wide): renumber "
        "the ids 0 … V−1 over the symbols that occur (numpy.unique(ids, return_inverse=True))")
  ids = {"train": train}
  for split, array in (("valid", valid), ("test", test)):
    if array is None:
      continue
    array = check_ids(array, names[split])
    outside = array >= vocab_size
    if outside.any():
      unknown = list(dict.fromkeys(array[outside].tolist()))
      raise TextDataError(
          f"{names[split]} has {len(unknown)} ids that the training ids lack "
          f"({vocabulary_lib.describe(map(str, unknown))}; {int(outside.sum())} occurrences; "
          f"the training ids end at {vocab_size - 1}): number all splits' symbols alike")
    check_eval_length(array.size, names[split])
    ids[split] = array
  return TextData(ids["train"], ids.get("valid"), ids.get("test"), ids_vocabulary(vocab_size), IDS,
                  hashlib.sha256(train.astype("<i4").tobytes()).hexdigest())


def load_text(train_file: str | os.PathLike, valid_file: Optional[str | os.PathLike] = None,
              test_file: Optional[str | os.PathLike] = None) -> TextData:
  """The task of ``--train_file`` (and ``--valid_file``, ``--test_file`` if given): all
  text files, read with :func:`read_text`, or all ``.npy`` files, with :func:`read_ids`."""
  files = {"train": train_file, "valid": valid_file, "test": test_file}
  files = {split: path for split, path in files.items() if path}
  kinds = {split: tokenization_of(path) for split, path in files.items()}
  if len(set(kinds.values())) > 1:
    given = ", ".join(f"{FLAGS[s]}={files[s]}" for s in files)
    raise TextDataError(f"{given}: give all files as text or all as token ids (.npy)")
  names = {split: f"{FLAGS[split]}={path}" for split, path in files.items()}
  if kinds["train"] == IDS:
    arrays = {split: read_ids(path, split) for split, path in files.items()}
    return from_ids(arrays["train"], arrays.get("valid"), arrays.get("test"), names)
  texts = {split: read_text(path, split) for split, path in files.items()}
  return from_text(texts["train"], texts.get("valid"), texts.get("test"), names)
