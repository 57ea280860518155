"""The logs of a run: CSV files (metrics.csv, eval.csv) and TensorBoard scalars.

A CSV log's header is the keys of its first row, followed by the ``expected`` columns
that row lacks (columns only some rows carry). A row with a column the header lacks (a
metric added since the run started, seen on resume) widens the header: the file is
rewritten with the new columns appended, empty in the rows before. Rows are flushed as
they are written.
"""

from __future__ import annotations

import csv
import os
import pathlib

from absl import logging

from ok_tf import python_values
from ok_tf.rundir import layout


def parse_value(text: str):
  """CSV cell -> int, float, None (empty cell) or the string itself."""
  if text is None:
    return None
  s = text.strip()
  if s == "":
    return None
  try:
    return int(s)
  except ValueError:
    pass
  try:
    return float(s)
  except ValueError:
    return text


def read_csv(path) -> list[dict]:
  """Rows of a CSV log with numbers parsed; [] if the file does not exist."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _read_rows(path: pathlib.Path) -> tuple[list[str] | None, list[list[str]]]:
  """(header, rows) of a CSV file; (None, []) if it is missing or empty."""
  if not path.exists():
    return None, []
  with open(path, newline="") as f:
    reader = csv.reader(f)
    return next(reader, None), list(reader)


def _rewrite(path: pathlib.Path, header: list[str], rows: list[list[str]]) -> None:
  """Replaces ``path`` atomically by ``header`` and ``rows``."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  os.replace(tmp, path)


class CsvLog:
  """An append-only CSV log (see the module docstring for its header)."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    self.expected: list[str] = []
    self._file = None
    self._writer = None
    self._fields: list[str] | None = None

  def expect(self, columns) -> None:
    """Columns that only some rows carry: they join the header of a new file."""
    self.expected += [str(c) for c in columns if str(c) not in self.expected]

  def _open(self, first_row: dict) -> None:
    header, _ = _read_rows(self.path)
    if header:
      self._fields = header
    else:
      self._fields = list(first_row) + [c for c in self.expected if c not in first_row]
    self._file = open(self.path, "a", newline="")
    self._writer = csv.DictWriter(self._file, fieldnames=self._fields, restval="")
    if not header:
      self._writer.writeheader()

  def _widen(self, new: list[str]) -> None:
    """Rewrites the file with ``new`` columns appended to the header (empty before)."""
    fields = self._fields + new
    self.close()
    _, rows = _read_rows(self.path)
    _rewrite(self.path, fields, [r + [""] * (len(fields) - len(r)) for r in rows])
    logging.info("%s: new columns %s; the header now has them (empty in earlier rows)",
                 self.path.name, new)
    self._fields = fields
    self._file = open(self.path, "a", newline="")
    self._writer = csv.DictWriter(self._file, fieldnames=self._fields, restval="")

  def write(self, row: dict) -> None:
    """Appends ``row`` (flushed); columns the header lacks widen it."""
    row = {str(k): python_values.to_python(v) for k, v in row.items()}
    if self._file is None:
      self._open(row)
    new = [k for k in row if k not in self._fields]
    if new:
      self._widen(new)
    self._writer.writerow(row)
    self._file.flush()

  def truncate_after(self, step: int | None) -> int:
    """Drops rows with step > `step` (all rows if step is None); returns #dropped."""
    self.close()
    header, rows = _read_rows(self.path)
    if not header:
      return 0
    if step is None:
      kept = []
    else:
      if "step" not in header:
        raise layout.RunDirError(f"{self.path} has no 'step' column; cannot truncate it")
      col = header.index("step")
      kept = [r for r in rows
              if not (len(r) > col and r[col].strip() and float(r[col]) > step)]
    _rewrite(self.path, header, kept)
    return len(rows) - len(kept)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    self._file = None
    self._writer = None


def scalar_metadata():
  """The SummaryMetadata of TensorBoard's scalars plugin, what ``tf.summary.scalar``
  attaches (which needs the tensorboard package, not a dependency of ok_tf)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  metadata = tf.compat.v1.SummaryMetadata
  return metadata(plugin_data=metadata.PluginData(plugin_name="scalars"),
                  data_class="DATA_CLASS_SCALAR")


class ScalarLog:
  """TensorBoard scalars in one folder: ``tf.summary.write`` of float32 scalars with the
  scalars plugin's metadata, the events ``tf.summary.scalar`` writes."""

  def __init__(self, folder):
    self.folder = pathlib.Path(folder)
    self._writer = None

  def write(self, step: int, values: dict, prefix: str = "train") -> None:
    """Writes the scalars ``prefix/name`` of ``values`` at ``step`` (None values skipped)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(str(self.folder))
    metadata = scalar_metadata()
    with self._writer.as_default():
      for name, value in values.items():
        value = python_values.to_python(value)
        if value is None:
          continue
        tag = f"{prefix}/{name}" if prefix else str(name)
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                         metadata=metadata)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None
