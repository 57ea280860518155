"""Plain Python values of tensors and numpy values, for JSON, CSV and printed lines.

:func:`to_python` is the one conversion: a tensor becomes its numpy value, a 0-d array or
numpy scalar its Python number (``item()``: a float32 becomes the float of the same
value), any other array a nested list, a path its string, and dictionaries, lists and
tuples are converted entry by entry (keys as strings, tuples as lists). Anything else is
returned unchanged.
"""

from __future__ import annotations

import pathlib
from typing import Any


def to_python(value: Any) -> Any:
  """``value`` as plain Python values (see the module docstring)."""
  if hasattr(value, "numpy"):
    value = value.numpy()
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  if isinstance(value, pathlib.PurePath):
    return str(value)
  if isinstance(value, dict):
    return {str(k): to_python(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_python(v) for v in value]
  return value
