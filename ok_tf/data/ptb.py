"""Character-level Penn Treebank (Mikolov et al. 2012 split): files, checksums, tokenisation.

Data (docs/protocol.md, "Character-level Penn Treebank"): the three files
``ptb.char.{train,valid,test}.txt`` of Mikolov's RNNLM ``simple-examples`` archive
(also accepted under the names ``{train,valid,test}.txt``). Each file is the word-level
file with words joined by ``_``, every character followed by one space, and every line
ending in ``" \\n"``; the file ends with ``"\\n "``, i.e. a trailing line holding only a
space, which is *not* a line of text.
The SHA-256 of every file is checked against :data:`SHA256`; altered copies are refused.

Two tokenisations (``TOKENIZATIONS``):

* ``"published"`` (default): the published code's symbol stream. Per line of text,
  ``'_' + ''.join(line.split()) + '_' + '\\n'``: this is the word-level file's bytes
  with ``' '`` written as ``'_'`` (one symbol per byte, ``'\\n'`` included).
  Train 5,101,618 / valid 399,782 / test 449,945 symbols; 50 symbols.
* ``"whitespace_eol"``: the whitespace-separated symbols of the character file plus
  one end-of-line symbol ``'<eos>'`` per line of text.
  Train 5,017,482 / valid 393,042 / test 442,423 symbols; 49 + ``'<eos>'`` = 50 symbols.

In both, symbol ids follow the order of first appearance in the *training* stream
(the end-of-line symbol included, at its first appearance: the end of the first line).
The vocabularies are therefore fixed by the checksummed training file; they are the
constants :data:`VOCABS`. As a :class:`ok_tf.data.vocabulary.Vocabulary`
(:func:`vocabulary`, ``TextData.vocabulary`` of :func:`load_ptb`), ``'_'`` prints as the
space between words and ``'<eos>'`` as the end of a line (:data:`DISPLAY`), so decoded
ids read as the word-level text.

The loader of the training scripts is :func:`resolve_data_dir` and :func:`load_ptb`:
PTB is a text corpus like any other, so it loads into the one container of texts,
:class:`ok_tf.data.text.TextData`; this module holds only what is PTB's own (files,
checksums, tokenisations, vocabularies). Where the files are found
(:func:`resolve_data_dir`), in order: ``--data_dir``, the environment variable
``OK_TF_DATA``, TFDS's manual-download folder (:func:`tfds_manual_dir`,
``<TFDS data dir>/downloads/manual``). This module needs
numpy only; the same files and tokenisations as a tensorflow-datasets dataset are the
builder ``ptb_char`` (:mod:`ok_tf.data.ptb_tfds`), and the training streams over the
loaded ids are :class:`ok_tf.tasks.text.TextStreams`, as for any text.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np

from ok_tf.data import text as text_lib
from ok_tf.data import vocabulary as vocabulary_lib

# ----------------------------------------------------------------------------- constants

SPLITS = ("train", "valid", "test")
TOKENIZATIONS = ("published", "whitespace_eol")
DEFAULT_TOKENIZATION = "published"
ENV_VAR = "OK_TF_DATA"
EOS = "<eos>"

#: SHA-256 of the distributed character files (:func:`sha256sums_text` writes them as SHA256SUMS).
SHA256 = {
    "train": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "valid": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "test": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}
#: Sizes in bytes of the distributed character files.
FILE_BYTES = {"train": 10_034_964, "valid": 786_084, "test": 884_846}

#: Number of symbols per split for each tokenisation.
NUM_SYMBOLS = {
    "published": {"train": 5_101_618, "valid": 399_782, "test": 449_945},
    "whitespace_eol": {"train": 5_017_482, "valid": 393_042, "test": 442_423},
}

_FIRST_APPEARANCE_PUBLISHED = "_aerbnkotlizcwyusfmghd-qpx\n<>Njv.'1950&$324867#\\/*"
_FIRST_APPEARANCE_WHITESPACE = "aer_bnkotlizcwyusfmghd-qpx\n<>Njv.'1950&$324867#\\/*"
#: Vocabulary (id -> symbol) of each tokenisation: order of first appearance in train.
VOCABS: dict[str, tuple[str, ...]] = {
    "published": tuple(_FIRST_APPEARANCE_PUBLISHED),
    "whitespace_eol": tuple(EOS if c == "\n" else c for c in _FIRST_APPEARANCE_WHITESPACE),
}

#: How the symbols that stand for something else print: the word separator and the end of line.
DISPLAY = {"_": " ", EOS: "\n"}

ARCHIVE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
ARCHIVE_MEMBER = "simple-examples/data/ptb.char.{split}.txt"

#: File names accepted inside a data directory, in order of preference.
FILE_NAME_CANDIDATES = (
    "ptb.char.{split}.txt",
    "{split}.txt",
    ARCHIVE_MEMBER,  # a directory holding the unpacked archive
)

#: Environment variable of TFDS's data directory (default ``~/tensorflow_datasets``).
TFDS_DATA_DIR_ENV_VAR = "TFDS_DATA_DIR"


class PtbDataMissingError(FileNotFoundError):
  """The character-level PTB files could not be found (the message says where to put them)."""


class PtbChecksumError(ValueError):
  """A character-level PTB file does not have the expected SHA-256 (altered copy)."""


# ----------------------------------------------------------------------------- files


def sha256sums_text() -> str:
  """The content of a ``SHA256SUMS`` file for ``{train,valid,test}.txt`` (for ``sha256sum -c``)."""
  return "".join(f"{SHA256[s]}  {s}.txt\n" for s in SPLITS)


def tfds_manual_dir() -> pathlib.Path:
  """TFDS's default manual-download folder, where the builder ``ptb_char`` looks for the files.

  ``<data_dir>/downloads/manual`` as TFDS builds it (``DatasetBuilder._make_download_manager``),
  with ``data_dir`` = ``$TFDS_DATA_DIR`` if set, else ``~/tensorflow_datasets``
  (``tfds.core.constants.get_default_data_dir``). Read at call time.
  """
  root = os.environ.get(TFDS_DATA_DIR_ENV_VAR) or os.path.join("~", "tensorflow_datasets")
  return pathlib.Path(root).expanduser() / "downloads" / "manual"


def missing_data_message(searched: Iterable[str] = ()) -> str:
  """Explain which files are needed, the three ways to provide them and how to check them.

  ``searched`` lists the places already looked at (included in the message).
  """
  searched = list(searched)
  lines = ["Character-level Penn Treebank files not found."]
  if searched:
    lines.append("Looked in:")
    lines += [f"  - {place}" for place in searched]
  lines += ["The three files (names ptb.char.<split>.txt are accepted too):"]
  lines += [f"  {s}.txt  ({FILE_BYTES[s]:,} bytes, sha256 {SHA256[s]})" for s in SPLITS]
  lines += [
      "Provide them, all in one folder DIR, in one of three ways:",
      "  1. the flag --data_dir=DIR;",
      f"  2. the environment variable {ENV_VAR}=DIR;",
      f"  3. TensorFlow Datasets' manual-download folder, {tfds_manual_dir()}",
      f"     (<${TFDS_DATA_DIR_ENV_VAR} or ~/tensorflow_datasets>/downloads/manual): put them there.",
      "The files are simple-examples/data/ptb.char.{train,valid,test}.txt of the archive",
      f"  {ARCHIVE_URL}",
      "(tfds.load('ptb_char') downloads and checks it itself when online).",
      "Check copies with `sha256sum -c SHA256SUMS` inside DIR, where SHA256SUMS holds:",
  ]
  lines += ["  " + line for line in sha256sums_text().splitlines()]
  return "\n".join(lines)


def find_files(data_dir: str | os.PathLike) -> dict[str, pathlib.Path] | None:
  """Paths of the three character files in ``data_dir``, or ``None`` if any is missing.

  Accepts ``ptb.char.<split>.txt``, ``<split>.txt`` and an unpacked archive
  (``simple-examples/data/ptb.char.<split>.txt``), per split, in that order of preference.
  """
  data_dir = pathlib.Path(data_dir)
  found = {}
  for split in SPLITS:
    for pattern in FILE_NAME_CANDIDATES:
      path = data_dir / pattern.format(split=split)
      if path.is_file():
        found[split] = path
        break
    else:
      return None
  return found


def _require_files(data_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Like :func:`find_files` but raise :class:`PtbDataMissingError` naming what is missing."""
  files = find_files(data_dir)
  if files is None:
    names = ", ".join(p.format(split="<split>") for p in FILE_NAME_CANDIDATES)
    raise PtbDataMissingError(
        missing_data_message([f"{data_dir} (as {names})"])
    )
  return files


def verify_checksum(split: str, data: bytes, path: str | os.PathLike = "") -> None:
  """Raise :class:`PtbChecksumError` unless ``data`` has the published SHA-256 of ``split``."""
  got = hashlib.sha256(data).hexdigest()
  expected = SHA256[split]
  if got != expected:
    where = f" ({path})" if path else ""
    raise PtbChecksumError(
        f"PTB character file for split '{split}'{where} differs from the distributed "
        f"{split}.txt / ptb.char.{split}.txt: expected sha256 {expected} "
        f"({FILE_BYTES[split]:,} bytes), got {got} ({len(data):,} bytes). "
        "This copy has been altered (e.g. CRLF line ends, stripped spaces, <unk> as one token); "
        f"replace it with the file from {ARCHIVE_URL} and check it with `sha256sum -c SHA256SUMS`."
    )


def read_verified(files: Mapping[str, str | os.PathLike]) -> dict[str, bytes]:
  """Read the three files (``{split: path}``) and verify their checksums; return ``{split: bytes}``."""
  texts = {}
  for split in SPLITS:
    path = pathlib.Path(files[split])
    data = path.read_bytes()
    verify_checksum(split, data, path)
    texts[split] = data
  return texts


# ----------------------------------------------------------------------------- tokenisation


def _check_tokenization(tokenization: str) -> None:
  if tokenization not in TOKENIZATIONS:
    raise ValueError(f"Unknown tokenization {tokenization!r}; choose one of {TOKENIZATIONS}.")


def symbol_bytes(text: bytes, tokenization: str = DEFAULT_TOKENIZATION) -> np.ndarray:
  """Symbol stream of one character file as a uint8 array of byte codes.

  ``"published"``: per line of text ``'_' + ''.join(line.split()) + '_' + '\\n'``.
  ``"whitespace_eol"``: the whitespace-separated symbols, with ``'\\n'`` standing for the
  end-of-line symbol after each line of text. A trailing line holding only spaces
  is not a line of text. Every symbol of a character file is one byte; a file in which
  two non-space bytes touch (i.e. not the character format) raises ``ValueError``.
  """
  _check_tokenization(tokenization)
  raw = np.frombuffer(text, dtype=np.uint8)
  non_space = (raw != ord(" ")) & (raw != ord("\n")) & (raw != ord("\t")) & (raw != ord("\r"))
  if np.any(non_space[1:] & non_space[:-1]):
    at = int(np.argmax(non_space[1:] & non_space[:-1]))
    raise ValueError(
        f"Not a character-level file: two symbols without a space between them at byte {at} "
        f"({text[max(0, at - 10):at + 10]!r}). Use the ptb.char.*.txt files."
    )
  joined = text.translate(None, b" \t\r")  # lines of text, one byte per symbol, '\n'-terminated
  if joined and not joined.endswith(b"\n"):
    joined += b"\n"  # a last line of text without its newline still ends there
  if tokenization == "published":
    joined = b"_" + joined.replace(b"\n", b"_\n_")[:-1] if joined else b""
  return np.frombuffer(joined, dtype=np.uint8)


def _vocab_strings(order: np.ndarray, tokenization: str) -> list[str]:
  eol = "\n" if tokenization == "published" else EOS
  return [eol if c == ord("\n") else chr(c) for c in order.tolist()]


def tokenize(
    texts: Mapping[str, bytes], tokenization: str = DEFAULT_TOKENIZATION
) -> tuple[dict[str, np.ndarray], list[str]]:
  """Token ids (int32) of every split in ``texts`` and the vocabulary (id -> symbol).

  The vocabulary is the order of first appearance in ``texts["train"]``; a symbol of
  another split that never appears in train raises ``ValueError``.
  """
  _check_tokenization(tokenization)
  codes = {split: symbol_bytes(text, tokenization) for split, text in texts.items()}
  order = text_lib.first_appearance_order(codes["train"])
  table = np.full(256, -1, dtype=np.int32)
  table[order] = np.arange(order.size, dtype=np.int32)
  ids = {}
  for split, c in codes.items():
    out = table[c]
    if np.any(out < 0):
      unknown = sorted({chr(x) for x in np.unique(c[out < 0]).tolist()})
      raise ValueError(f"Split '{split}' has symbols never seen in train: {unknown}.")
    ids[split] = out
  return ids, _vocab_strings(order, tokenization)


def _printed_as_text(symbols) -> vocabulary_lib.Vocabulary:
  symbols = tuple(symbols)
  return vocabulary_lib.Vocabulary(symbols, {s: t for s, t in DISPLAY.items() if s in symbols})


def vocabulary(tokenization: str = DEFAULT_TOKENIZATION) -> vocabulary_lib.Vocabulary:
  """The symbols of ``tokenization`` (:data:`VOCABS`), printed as :data:`DISPLAY` says."""
  _check_tokenization(tokenization)
  return _printed_as_text(VOCABS[tokenization])


# ----------------------------------------------------------------------------- plain loader


def resolve_data_dir(flag_value: str | None) -> pathlib.Path:
  """Directory of the PTB character files.

  In order: ``flag_value`` (``--data_dir``), else the environment variable
  ``OK_TF_DATA``, else TFDS's manual-download folder (:func:`tfds_manual_dir`) if it
  holds the three files. Raises :class:`PtbDataMissingError` (a ``FileNotFoundError``)
  naming the three options and the expected files when none applies or the chosen
  directory does not exist.
  """
  if flag_value:
    path = pathlib.Path(flag_value).expanduser()
    if not path.is_dir():
      raise PtbDataMissingError(missing_data_message([f"--data_dir={flag_value} (no such directory)"]))
    return path
  env = os.environ.get(ENV_VAR)
  if env:
    path = pathlib.Path(env).expanduser()
    if not path.is_dir():
      raise PtbDataMissingError(missing_data_message([f"{ENV_VAR}={env} (no such directory)"]))
    return path
  manual = tfds_manual_dir()
  if find_files(manual) is not None:
    return manual
  raise PtbDataMissingError(
      missing_data_message(
          [
              "--data_dir (not given)",
              f"${ENV_VAR} (not set)",
              f"{manual} ({'no PTB character files' if manual.is_dir() else 'does not exist'})",
          ]
      )
  )


def load_ptb(data_dir: str | os.PathLike,
             tokenization: str = DEFAULT_TOKENIZATION) -> text_lib.TextData:
  """Read, checksum and tokenise the three character files in ``data_dir``: a
  :class:`~ok_tf.data.text.TextData` of the three splits, the vocabulary printed as
  :data:`DISPLAY` says, ``tokenization``, and ``train_sha256`` the training file's
  (:data:`SHA256`).

  Raises :class:`PtbDataMissingError` if a file is missing and :class:`PtbChecksumError`
  if a file has been altered. Takes well under a second; caches nothing.
  """
  _check_tokenization(tokenization)
  texts = read_verified(_require_files(data_dir))
  ids, vocab = tokenize(texts, tokenization)
  return text_lib.TextData(ids["train"], ids["valid"], ids["test"], _printed_as_text(vocab),
                           tokenization, SHA256["train"])
