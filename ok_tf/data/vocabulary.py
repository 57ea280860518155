"""The symbols of a text task: id ↔ symbol, and how a sequence of ids prints as text.

Symbol ``i`` is ``symbols[i]``; PTB and any text number their symbols in order of first
appearance in the training text. A symbol is a string: one character, a name such as
PTB's ``"<eos>"``, or the decimal id of a text given as token ids. ``display`` maps the
symbols that stand for something else to the text they print as (PTB: ``"_"`` is the
space between words, ``"<eos>"`` the end of a line); every other symbol prints as
itself. :meth:`Vocabulary.decode` joins the printed symbols with ``separator`` (``""``
for characters, ``" "`` for token ids).

:meth:`Vocabulary.encode` inverts it: with an empty separator the text is cut greedily
into the longest symbol or printed form it starts with (one character at a time when all
are single characters), with a separator it is split at whitespace. A run directory
records its vocabulary as vocab.json (:meth:`Vocabulary.to_json`, :meth:`Vocabulary.from_json`).
Pure Python and numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np


class UnknownSymbolsError(ValueError):
  """A text holds symbols outside the vocabulary.

  ``unknown``: the distinct unknown characters (or tokens), in order of first appearance;
  ``count``: how many times they occur in all.
  """

  def __init__(self, unknown: list[str], count: int):
    self.unknown = list(unknown)
    self.count = int(count)
    super().__init__(f"{len(self.unknown)} symbols outside the vocabulary "
                     f"({describe(self.unknown)}; {self.count} occurrences)")


def describe(symbols: Iterable[str], limit: int = 5) -> str:
  """The first ``limit`` symbols, quoted (``'é', '\\t', …``), for one-line messages."""
  symbols = list(symbols)
  shown = ", ".join(repr(s) for s in symbols[:limit])
  return shown + (", …" if len(symbols) > limit else "")


def code_points(text: str) -> np.ndarray:
  """The Unicode code points of ``text``, uint32 ``[len(text)]``."""
  return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclasses.dataclass(frozen=True, eq=True)
class Vocabulary:
  """Id ↔ symbol of a text task; see the module docstring.

  Fields: ``symbols`` (distinct, non-empty strings; id i is ``symbols[i]``), ``display``
  (symbol → printed text, for the symbols that do not print as themselves) and
  ``separator`` (``""`` or whitespace, put between printed symbols).
  """

  symbols: tuple[str, ...]
  display: Mapping[str, str] = dataclasses.field(default_factory=dict)
  separator: str = ""

  def __post_init__(self):
    symbols = tuple(str(s) for s in self.symbols)
    if not symbols or any(not s for s in symbols) or len(set(symbols)) != len(symbols):
      raise ValueError(f"a vocabulary needs distinct non-empty symbols, got {len(symbols)} "
                       f"({describe(symbols)})")
    display = {str(k): str(v) for k, v in dict(self.display).items()}
    strays = [k for k in display if k not in symbols]
    if strays:
      raise ValueError(f"display names symbols that are not in the vocabulary: {describe(strays)}")
    if self.separator and not self.separator.isspace():
      raise ValueError(f"separator must be empty or whitespace, got {self.separator!r}")
    object.__setattr__(self, "symbols", symbols)
    object.__setattr__(self, "display", display)

  @property
  def size(self) -> int:
    """V, the number of symbols."""
    return len(self.symbols)

  def __len__(self) -> int:
    return self.size

  def printed(self, i: int) -> str:
    """How symbol ``i`` prints."""
    symbol = self.symbols[i]
    return self.display.get(symbol, symbol)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of ``ids``: their printed symbols joined by ``separator``."""
    forms = [self.printed(i) for i in range(self.size)]
    return self.separator.join(forms[int(i)] for i in np.asarray(ids).reshape(-1))

  def encode(self, text: str) -> np.ndarray:
    """The ids of ``text`` (int32), read as the module docstring says.

    Raises:
      UnknownSymbolsError: ``text`` holds characters (tokens) no symbol accounts for.
    """
    lookup = {s: i for i, s in enumerate(self.symbols)}
    lookup.update({p: lookup[s] for s, p in self.display.items() if p not in lookup})
    if self.separator:
      return self._encode_pieces(text.split(), lookup)
    if all(len(k) == 1 for k in lookup):
      return self._encode_characters(text, lookup)
    longest = max(len(k) for k in lookup)
    pieces, at = [], 0
    while at < len(text):
      size = next((n for n in range(min(longest, len(text) - at), 0, -1)
                   if text[at:at + n] in lookup), 1)
      pieces.append(text[at:at + size])
      at += size
    return self._encode_pieces(pieces, lookup)

  @staticmethod
  def _encode_pieces(pieces: list[str], lookup: dict[str, int]) -> np.ndarray:
    unknown = [p for p in pieces if p not in lookup]
    if unknown:
      raise UnknownSymbolsError(list(dict.fromkeys(unknown)), len(unknown))
    return np.array([lookup[p] for p in pieces], dtype=np.int32)

  @staticmethod
  def _encode_characters(text: str, lookup: dict[str, int]) -> np.ndarray:
    """:meth:`encode` when every symbol and printed form is one character (vectorised)."""
    keys = np.array(sorted(ord(k) for k in lookup), dtype=np.uint32)
    values = np.array([lookup[chr(k)] for k in keys.tolist()], dtype=np.int32)
    codes = code_points(text)
    at = np.minimum(np.searchsorted(keys, codes), keys.size - 1)
    known = keys[at] == codes
    if not known.all():
      bad = codes[~known]
      raise UnknownSymbolsError(list(dict.fromkeys(map(chr, bad.tolist()))), int(bad.size))
    return values[at]

  def to_json(self) -> dict:
    """``{"symbols": [...], "display": {...}, "separator": ...}`` (vocab.json)."""
    return {"symbols": list(self.symbols), "display": dict(self.display),
            "separator": self.separator}

  @classmethod
  def from_json(cls, obj: Mapping) -> "Vocabulary":
    """The vocabulary :meth:`to_json` wrote."""
    return cls(tuple(obj["symbols"]), dict(obj.get("display", {})), obj.get("separator", ""))
