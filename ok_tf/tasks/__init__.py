"""The online learning tasks, one module each, and the registry that names them.

``TASKS`` maps a task's name (``--task``) to the :class:`ok_tf.tasks.base.Entry` that
describes it, given as ``"module:ATTRIBUTE"`` and imported on first use (:func:`get`), so
naming the tasks imports none of them. The protocol every task follows is in
:mod:`ok_tf.tasks.base`; adding a task is one module with its entry, plus a line here.
"""

from __future__ import annotations

import importlib

TASKS = {
    "copy": "ok_tf.tasks.copy:ENTRY",
    "ptb": "ok_tf.tasks.text:PTB",
    "text": "ok_tf.tasks.text:ENTRY",
    "additive": "ok_tf.tasks.additive:ENTRY",
    "mackey_glass": "ok_tf.tasks.chaotic:MACKEY_GLASS",
    "henon": "ok_tf.tasks.chaotic:HENON",
    "lorenz": "ok_tf.tasks.chaotic:LORENZ",
    "mnist": "ok_tf.tasks.mnist:ENTRY",
    "arrays": "ok_tf.tasks.arrays:ENTRY",
}


def names() -> list[str]:
  """The registered task names, in registry order."""
  return list(TASKS)


def get(name: str):
  """The :class:`~ok_tf.tasks.base.Entry` of task ``name``.

  Raises:
    ValueError: no task has that name (the message lists them).
  """
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
  module, attribute = TASKS[name].split(":")
  return getattr(importlib.import_module(module), attribute)
