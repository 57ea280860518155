"""Registries filled by discovery: every module of a package that defines a class of a
given base with a non-empty key is an entry (:func:`discover`).

So adding a cell (:mod:`ok_tf.cells`) or a training method (:mod:`ok_tf.estimators`) is
one module in its package; no list elsewhere names it.  Entries are ordered by their
class attribute ``order`` (then name): the order of help texts, tables and legends.
"""

from __future__ import annotations

import importlib
import pkgutil


def discover(package: str, path, base: type, key: str) -> dict[str, type]:
  """``{cls.<key>: cls}`` for the subclasses of ``base`` defined in the modules of
  ``package`` (``path``: its ``__path__``) whose ``key`` attribute is set, sorted by
  ``(cls.order, key)``.

  Raises:
    TypeError: two classes have the same key.
  """
  found = {}
  for info in pkgutil.iter_modules(path):
    if info.name.startswith("_"):
      continue
    module = importlib.import_module(f"{package}.{info.name}")
    for cls in vars(module).values():
      if (isinstance(cls, type) and issubclass(cls, base) and cls.__module__ == module.__name__
          and getattr(cls, key, "")):
        name = getattr(cls, key)
        if name in found:
          raise TypeError(f"{found[name].__module__}.{found[name].__name__} and "
                          f"{module.__name__}.{cls.__name__} are both named {name!r}: rename one")
        found[name] = cls
  return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))
