"""Hyperparameters that a cell or an estimator declares, and their config fields and flags.

A cell or estimator class lists its own arguments (beyond ``units`` and ``rank``) as
:class:`Hyperparameter` s in its ``hyperparameters`` attribute: name, type, default, help
and an optional rule.  Each becomes a keyword of the class's ``__init__``, a field
``{owner}_{name}`` of the run config (``ok_balance``, ``uoro_eps``, ``leaky_alpha``), so
its flag, its place in config.json and its check, all read from the declaration
(:func:`config_fields`, :func:`check`, :func:`values`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  """One argument of a cell or estimator.

  Attributes:
    name: the keyword of the class's ``__init__`` (``balance``).
    type: ``bool``, ``int``, ``float`` or ``str``.
    default: the value when none is given (the ``__init__`` default).
    help: one sentence for the flag's help.
    valid: None, or a predicate the value must satisfy.
    rule: what ``valid`` requires, for the error message ("in (0, 1]").
  """
  name: str
  type: type
  default: Any
  help: str
  valid: Optional[Callable[[Any], bool]] = None
  rule: str = ""


def field_name(owner: str, hp: Hyperparameter) -> str:
  """The config field and flag of ``hp`` of the cell or method ``owner``: ``ok_balance``."""
  return f"{owner}_{hp.name}"


def config_fields(owners: dict, kind: str) -> list[tuple[str, type, dataclasses.Field]]:
  """The config fields of the hyperparameters of ``owners`` (name → class with a
  ``hyperparameters`` tuple), as ``dataclasses.make_dataclass`` takes them; each field's
  metadata holds its ``help`` and its ``owner`` (``"method ok"``, ``kind`` and name)."""
  fields = []
  for owner, cls in owners.items():
    for hp in cls.hyperparameters:
      # a run stored before the declaration ran with the default; a cell's
      # hyperparameter makes runs different settings (a method's is in its label)
      metadata = {"help": hp.help, "owner": f"{kind} {owner}", "absent": hp.default,
                  "distinguishes": kind == "cell"}
      fields.append((field_name(owner, hp), hp.type,
                     dataclasses.field(default=hp.default, metadata=metadata)))
  return fields


def values(owner: str, cls, config) -> dict:
  """The keyword arguments of ``cls`` (the cell or method ``owner``) from ``config`` (a
  run config or a dict): ``{hp.name: config[owner_name]}`` for each declared one."""
  get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
  return {hp.name: get(field_name(owner, hp), hp.default) for hp in cls.hyperparameters}


def check(owner: str, cls, config) -> Optional[str]:
  """None, or a one-line message naming the first of ``cls``'s hyperparameters whose value
  in ``config`` breaks its rule."""
  for hp in cls.hyperparameters:
    value = values(owner, cls, config)[hp.name]
    if hp.valid is not None and not hp.valid(value):
      return f"--{field_name(owner, hp)} must be {hp.rule}, got {value!r}"
  return None
