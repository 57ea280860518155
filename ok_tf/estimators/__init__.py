"""Gradient estimators for online learning of recurrent networks, behind one protocol, and
the registry of every training method.

Every estimator tracks, per stream b of a batch, the recurrent state s_t and an
approximation G'_t of the influence matrix G_t = ds_t/dW (docs/algorithms.md §2):

    G_t = H_t G_{t−1} + ĥ_t ⊗ D_t,      G_0 = 0
    dL_t/dW = (∂L_t/∂s_t) G_t

The protocol (all methods pure in the state, so they can live in ``tf.function`` loops)::

    est = ok_tf.estimators.get(name, cell, rank=r)   # any estimator name of METHODS
    state = est.init(batch_size)          # zero recurrent and approximation state
    state = est.step(state, x, rng)       # one time step, x: [B, input_dim]
    state.h                               # s_t, [B, state_size]
    est.per_example_gradient(state, dl_ds)  # [B, a, k·n]: (∂L_t/∂s_t)_b G'_{t,b} per stream
    est.gradient(state, dl_ds)            # [dL_t/dW]: the batch mean of the above, a list
                                          # matching cell.trainable_variables
    est.influence(state)                  # G'_t, dense [B, S, a, k·n] (diagnostics, tests)
    state = est.reset(state, mask)        # zero state and approximation where mask [B]
    run_sequence(est, state, xs, loss_fn, targets, rng)   # T steps [T, B, d] in one
                                          # compiled loop: Σ_t ĝ_t and the final state

``dl_ds`` [B, S] is each stream's own ∂L_t/∂s_t (not that of a batch mean). States are
``NamedTuple`` s of tensors whose fields all have the batch as leading axis.

The registry :data:`METHODS` lists every training method, in the order of tables and
legends (each class's ``order``): the estimators and TBPTT (which
:class:`ok_tf.training.TBPTTTrainer` runs). Each entry is a :class:`Method` and carries
its name, its rank rule (:meth:`Method.rank_for`), whether it takes a truncation length,
its own hyperparameters (``hyperparameters``: flags ``--{name}_{hp}``), its label
(:meth:`Method.label`, "ok (r=8)", "tbptt (T=25)", "kf"), its cost model
(:meth:`Method.cost`: flops and state bytes per step) and, for an estimator, its own
diagnostics (:meth:`Estimator.diagnostics`). The flags, the run labels, the tables, the
colours, the benchmark, the noise study and the diagnostics read it.

One module of this package per method (``base`` holds the protocol, ``kronecker_sum``
what OK and the KF methods share, ``sequence`` :func:`run_sequence`); :data:`METHODS` is
filled by importing them (:func:`ok_tf.registry.discover`), so a new estimator is one
module defining a subclass of :class:`Estimator` with its ``name`` and ``order``.
"""

from __future__ import annotations

from ok_tf import cells as cells_lib
from ok_tf import hyperparameters as hyperparameters_lib
from ok_tf import registry
from ok_tf.estimators.base import Cost
from ok_tf.estimators.base import Dims
from ok_tf.estimators.base import Estimator
from ok_tf.estimators.base import Method
from ok_tf.estimators.base import stream_matmul
from ok_tf.estimators.kronecker_sum import KroneckerState
from ok_tf.estimators.kronecker_sum import KroneckerSum
from ok_tf.estimators.sequence import SequenceResult
from ok_tf.estimators.sequence import run_sequence

#: Every training method: name → :class:`Method`, in the order of tables and legends.
METHODS = registry.discover(__name__, __path__, Method, "name")
#: The methods that are estimators (what ``get`` builds and the online trainer runs).
ESTIMATORS = {name: m for name, m in METHODS.items() if issubclass(m, Estimator)}
#: The exact method (``exact``), the reference the others are measured against.
EXACT = next(name for name, m in METHODS.items() if m.exact)
# Each method's class and its module's state type are attributes of this package
# (``estimators.OK``, ``estimators.OKState``).
for _cls in METHODS.values():
  globals()[_cls.__name__] = _cls
  for _name, _value in vars(__import__(_cls.__module__, fromlist=["_"])).items():
    if _name.endswith("State") and isinstance(_value, type):
      globals()[_name] = _value
del _cls, _name, _value


def names() -> list[str]:
  """The registered method names, in registry order."""
  return list(METHODS)


def default() -> str:
  """The method of a run that names none: the first of the registry."""
  return next(iter(METHODS))


def method(name: str) -> type[Method]:
  """The :class:`Method` named ``name``; ValueError listing the names otherwise."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
  return METHODS[name]


def label(name: str, rank=None, truncation=None, config=None) -> str:
  """:meth:`Method.label` of the method ``name`` ("ok (r=8)"), with its hyperparameters
  that differ from their defaults in ``config`` (a run config or its dict; None: none
  shown); an unknown name as is."""
  if name not in METHODS:
    return str(name)
  settings = None if config is None else hyperparameters(name, config)
  return METHODS[name].label(rank, truncation, settings)


def order(name: str) -> int:
  """Position of ``name`` in :data:`METHODS` (unknown names after all the known ones)."""
  return list(METHODS).index(name) if name in METHODS else len(METHODS)


def color(name: str) -> str:
  """The method's colour in every plot: matplotlib's cycle colour ``C{i}`` at its position
  in :data:`METHODS` (``"C7"``, grey, for a name not in it)."""
  return f"C{order(name) % 10}" if name in METHODS else "C7"


def hyperparameters(name: str, config) -> dict:
  """The keyword arguments of method ``name`` from a run config (object or dict): its
  declared hyperparameters' fields (``ok_balance`` → ``balance``), defaults if absent."""
  return hyperparameters_lib.values(name, method(name), config)


def get(name: str, cell: cells_lib.KroneckerCell, rank: int | None = None,
        **kwargs) -> Estimator:
  """An estimator by name.

  Args:
    name: a name of :data:`ESTIMATORS`.
    cell: a built :class:`ok_tf.cells.KroneckerCell`.
    rank: r for the methods that take one (``ok``, ``kf_avg``: required); ``kf`` accepts
      only 1; the others take none (:meth:`Method.rank_for`).
    **kwargs: the estimator's hyperparameters (its class's ``hyperparameters``: e.g.
      ``balance`` for ok, ``eps`` for uoro; :func:`hyperparameters` reads them from a
      config).
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
  cls = ESTIMATORS[name]
  unknown = set(kwargs) - {hp.name for hp in cls.hyperparameters}
  if unknown:
    raise TypeError(f"{name} takes no argument {', '.join(sorted(unknown))}; its "
                    f"hyperparameters: {', '.join(hp.name for hp in cls.hyperparameters) or 'none'}")
  rank = cls.rank_for(rank)
  if cls.takes_rank or cls.fixed_rank is not None:
    return cls(cell, rank, **kwargs)
  return cls(cell, **kwargs)
