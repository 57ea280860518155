"""Recurrent cells whose weights are one matrix W, with the pieces RTRL needs, and the
registry that names them.

The class every cell derives from, and what it provides (ĥ_t, D_t as gate derivatives,
H_t, its unit blocks), is :class:`ok_tf.cells.base.KroneckerCell`; each cell is one module
of this package defining a subclass with its ``cell_name`` (``--cell``).  :data:`CELLS`
maps those names to the classes, found by importing the package's modules
(:func:`ok_tf.registry.discover`), so adding a cell is its module alone.  Every class is
also an attribute of this package (``cells.RHNCell``).
"""

from __future__ import annotations

from ok_tf import hyperparameters as hyperparameters_lib
from ok_tf import registry
from ok_tf.cells.base import CellStep
from ok_tf.cells.base import KroneckerCell
from ok_tf.cells.base import UnitStep

#: Every cell: ``cell_name`` → class, in the order of the classes' ``order``.
CELLS = registry.discover(__name__, __path__, KroneckerCell, "cell_name")
globals().update({cls.__name__: cls for cls in CELLS.values()})


def names() -> list[str]:
  """The registered cell names, in registry order."""
  return list(CELLS)


def default() -> str:
  """The cell of a run that names none: the first of the registry."""
  return next(iter(CELLS))


def cell_class(name: str) -> type[KroneckerCell]:
  """The class of the cell ``name``; ValueError listing the names otherwise."""
  if name not in CELLS:
    raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}")
  return CELLS[name]


def hyperparameters(name: str, config) -> dict:
  """The keyword arguments of cell ``name`` from a run config (object or dict): its
  declared hyperparameters' fields (``leaky_alpha`` → ``alpha``), defaults if absent."""
  return hyperparameters_lib.values(name, cell_class(name), config)


def get(name: str, units: int, **kwargs) -> KroneckerCell:
  """A cell by name (one of :data:`CELLS`), with ``units`` units; ``kwargs`` go to its
  class (its hyperparameters, Keras layer arguments such as ``dtype``)."""
  return cell_class(name)(units, **kwargs)
