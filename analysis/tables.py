"""The tables of the analysis scripts, as Markdown and as CSV, each written one way.

Both take ``(rows, columns)`` in this order (:func:`write_csv` the path first):

* :func:`markdown`: the header ``| c_1 | … | c_k |``, the separator ``|---|---:|…|``
  (``align``: one letter per column, ``l`` for ``---``, ``r`` for ``---:``, right-aligned
  numbers; default all ``l``) and one line ``| a_1 | … | a_k |`` per row. A row is a
  sequence of cell texts, or a mapping column → text; cells are written as given (an
  empty cell leaves two spaces between its bars), so the caller formats the numbers.
* :func:`write_csv`: a header of ``columns`` and one line per row (a mapping); keys
  outside ``columns`` are left out and missing ones written empty; UTF-8, the folder
  created if needed.
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Iterable, Mapping, Sequence

#: The separator cell of each alignment letter.
SEPARATORS = {"l": "---", "r": "---:"}


def line(cells: Iterable) -> str:
  """One row of a Markdown table: ``| a | b |``."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(rows: Iterable, columns: Sequence[str], align: str = "") -> str:
  """The Markdown table of ``rows`` under the header ``columns`` (no final newline).

  ``align`` holds one letter per column (``l`` or ``r``), or is empty: all left.
  """
  align = align or "l" * len(columns)
  if len(align) != len(columns) or set(align) - set(SEPARATORS):
    raise ValueError(f"align must be one of {'/'.join(SEPARATORS)} per column ({len(columns)}), "
                     f"got {align!r}")
  lines = [line(columns), "|" + "|".join(SEPARATORS[a] for a in align) + "|"]
  for row in rows:
    cells = [row[c] for c in columns] if isinstance(row, Mapping) else list(row)
    if len(cells) != len(columns):
      raise ValueError(f"a row of {len(cells)} cells in a table of {len(columns)} columns: {cells}")
    lines.append(line(cells))
  return "\n".join(lines)


def write_csv(path, rows: Iterable[Mapping], columns: Sequence[str]) -> None:
  """``rows`` (mappings column → value) as a CSV file at ``path`` with the header ``columns``."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
