"""ok_tf: Optimal Kronecker-Sum Approximation (OK) of Real Time Recurrent Learning.

A TensorFlow 2 / Keras 3 implementation of OK (Benzing et al., ICML 2019) and its
baselines, for online training of recurrent networks. The maths is in docs/algorithms.md,
the protocols in docs/protocol.md. What a user calls, by topic:

Cells (Keras RNN cells, one weight matrix W; ``keras.layers.RNN(RHNCell(n))`` works)
  RHNCell, TanhRNNCell, LSTMCell    the paper's RHN, a tanh RNN, an LSTM; every class of
                                    the registry by its name (``ok_tf.LeakyTanhCell``)
  KroneckerCell                     their base class (``linearize``: ĥ_t, d_t, H_t)
  get_cell(name, units)             a cell by name (the registry ``ok_tf.cells.CELLS``)

Model
  RecurrentModel                    cell + readout for any specs; a Keras model
                                    (``model.save("m.keras")``, ``model.predict(ids)``)
  Symbols, Reals, Classes           input and output specs: one-hot ids or real vectors
                                    in; softmax classes (bits) or reals (squared error) out

Gradient estimators (``est.init/reset/step/gradient``, batched over streams)
  get_estimator(name, cell, rank)   an estimator by name (``ESTIMATORS``)
  METHODS, ESTIMATORS               the registry: name → class (label, rank rule, cost)
  OK, KF, KFAvg, UORO, SnAp1, RTRL  the classes
  run_sequence(est, state, xs, loss_fn, targets)   T steps in one compiled loop: the
                                    summed gradient estimate and the final state

Training
  OnlineTrainer(model, est, task, optimizer, batch_size)   an update after every step
  TBPTTTrainer(model, task, optimizer, batch_size, truncation)
                                    truncated BPTT, an update per window
  make_optimizer(lr)                Adam with the paper's ε

Tasks (``init/next/observe/metrics``, pure TensorFlow; ``python -m ok_tf.train --task=``)
  TASKS, get_task                   the registry: name → entry (options, presets, build)
  Data                              one step: inputs, targets, reset, weight
  CopyTask                          the copy (string memorisation) curriculum
  TextStreams                       B streams through any text / token array (PTB's too)
  ArrayTask                         a user's [N, T, d] arrays or tf.data.Dataset
  load_ptb, load_text               PTB's splits; a user's text files, with the vocabulary

Evaluation and run directories
  evaluate_bpc(model, ids)          bits per character on a whole text
  evaluate_sequences(model, x, y, w)  weighted loss (and accuracy) over whole sequences
  Run(path)                         a run directory, read (config, logs, checkpoints)
  load_model(path, "best")          a run's model with a checkpoint's weights

Diagnostics (estimators against exact RTRL on small nets)
  exact_reference, measure          bias and variance of an estimator's gradient
  Shadow, agreement                 an exact-RTRL shadow and cosine / relative error

Submodules hold the rest (``ok_tf.kronecker``, ``ok_tf.config``, ...). Names load on
first use, so ``import ok_tf`` alone does not import TensorFlow.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name → (submodule, attribute) of every name this package exports.
_EXPORTS = {
    "RHNCell": ("cells", "RHNCell"),
    "TanhRNNCell": ("cells", "TanhRNNCell"),
    "LSTMCell": ("cells", "LSTMCell"),
    "KroneckerCell": ("cells", "KroneckerCell"),
    "get_cell": ("cells", "get"),
    "RecurrentModel": ("models", "RecurrentModel"),
    "Symbols": ("specs", "Symbols"),
    "Reals": ("specs", "Reals"),
    "Classes": ("specs", "Classes"),
    "get_estimator": ("estimators", "get"),
    "METHODS": ("estimators", "METHODS"),
    "ESTIMATORS": ("estimators", "ESTIMATORS"),
    "OK": ("estimators", "OK"),
    "KF": ("estimators", "KF"),
    "KFAvg": ("estimators", "KFAvg"),
    "UORO": ("estimators", "UORO"),
    "SnAp1": ("estimators", "SnAp1"),
    "RTRL": ("estimators", "RTRL"),
    "run_sequence": ("estimators", "run_sequence"),
    "OnlineTrainer": ("training", "OnlineTrainer"),
    "TBPTTTrainer": ("training", "TBPTTTrainer"),
    "make_optimizer": ("training", "make_optimizer"),
    "TASKS": ("tasks", "TASKS"),
    "get_task": ("tasks", "get"),
    "Data": ("tasks.base", "Data"),
    "CopyTask": ("tasks.copy", "CopyTask"),
    "TextStreams": ("tasks.text", "TextStreams"),
    "ArrayTask": ("tasks.arrays", "ArrayTask"),
    "load_ptb": ("data.ptb", "load_ptb"),
    "load_text": ("data.text", "load_text"),
    "evaluate_bpc": ("evaluation", "evaluate_bpc"),
    "evaluate_sequences": ("evaluation", "evaluate_sequences"),
    "Run": ("runs", "Run"),
    "load_model": ("models", "load_run_model"),
    "exact_reference": ("diagnostics", "exact_reference"),
    "measure": ("diagnostics", "measure"),
    "Shadow": ("diagnostics", "Shadow"),
    "agreement": ("diagnostics", "agreement"),
}
_SUBMODULES = ("cells", "config", "data", "diagnostics", "distributed", "estimators",
               "evaluation", "experiment", "hyperparameters", "kronecker", "lock", "models",
               "multi_worker", "philox", "preemption", "progress", "provenance",
               "python_values", "registry", "rundir", "runs", "sample", "sharding", "specs",
               "tasks", "train", "training", "validation")

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
  """Loads an exported name or a submodule on first use."""
  if name in _EXPORTS:
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  registered = _registered(name) if name[:1].isupper() else None
  if registered is not None:
    globals()[name] = registered
    return registered
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _registered(name: str):
  """The class called ``name`` of the cell or method registries (``cells.CELLS``,
  ``estimators.METHODS``), else None: a new cell or estimator needs no line here."""
  for module, registry in (("cells", "CELLS"), ("estimators", "METHODS")):
    for cls in getattr(importlib.import_module(f"{__name__}.{module}"), registry).values():
      if cls.__name__ == name:
        return cls
  return None


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
