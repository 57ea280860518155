"""The task protocol: what an online learning problem gives the trainers, step by step.

A *task* plays B streams of a sequence problem at once, one time step per call, in pure
TensorFlow (so a chunk of steps runs in one compiled loop, and its state, a nest of
tensors, is checkpointed with the run):

    state = task.init(rng)
    state, data = task.next(state, rng)     # Data(inputs, targets, reset, weight)
    state = task.observe(state, loss)        # the step's loss, in the task's unit
    task.metrics(state)                      # scalars for the metrics row

``data.inputs`` follows ``task.input_spec`` (:mod:`ok_tf.specs`: symbols ``[B]`` int32
or reals ``[B, d]``), ``data.targets`` ``task.output_spec`` (classes ``[B]`` int32 or
reals ``[B, m]``), ``data.reset`` ``[B]`` bool marks the streams that start anew at this
step (their hidden and approximation state are zeroed before it), and ``data.weight``
``[B]`` float32 is each stream's loss weight w_{t,b} at this step. The objective of one
step is

    L_t = (1/B) Σ_b w_{t,b} L_{t,b},

so w = 1 everywhere is the plain batch mean, w = 0 a step without loss (sequential MNIST
counts only the last step of an image), and the online gradient of stream b is
w_{t,b} ∂L_{t,b}/∂s_t. The loss a task observes is the mean over the streams that count,
Σ_b w L / Σ_b w (0 when none does), reported in the output spec's unit (bits, or the
mean squared error).

Besides the methods, a task states its ``batch_size`` B, its specs, ``baselines``
(named reference losses in its unit, e.g. a uniform guess or a predictor without memory)
and ``baseline``, the one the divergence guard and the progress line read; ``shard(index,
count)`` returns the task of streams index·b … (index+1)·b − 1, b = B/count (several
devices), and ``describe()`` the dict a run records (specs, baselines, parameters).

A task is registered (:mod:`ok_tf.tasks`) by an :class:`Entry`: its name, its own
configuration fields (a dataclass whose fields become flags), its presets and
``build(cfg, resume) -> Setup``, which makes the task and what the run around it needs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

import tensorflow as tf

from ok_tf import specs


class Data(NamedTuple):
  """One step of a task for its B streams (see the module docstring)."""
  inputs: tf.Tensor    # [B] int32 (symbols) or [B, d] (reals)
  targets: tf.Tensor   # [B] int32 (classes) or [B, m] (reals)
  reset: tf.Tensor     # [B] bool: the streams that start anew at this step
  weight: tf.Tensor = None  # [B] float32: w_{t,b}, the weight of this step's loss (None: 1)


def full_weight(batch: int) -> tf.Tensor:
  """w = 1 for all B streams: every step's loss counts."""
  return tf.ones([batch], tf.float32)


@runtime_checkable
class Task(Protocol):
  """What every task provides (see the module docstring)."""

  batch_size: int

  @property
  def input_spec(self): ...

  @property
  def output_spec(self): ...

  @property
  def baselines(self) -> dict[str, float]: ...

  @property
  def baseline(self) -> float: ...

  def init(self, rng: tf.random.Generator): ...

  def next(self, state, rng: tf.random.Generator) -> tuple[Any, Data]: ...

  def observe(self, state, loss): ...

  def metrics(self, state) -> dict[str, tf.Tensor]: ...

  def shard(self, index: int, count: int) -> "Task": ...

  def describe(self) -> dict: ...


def check_shard(batch_size: int, index: int, count: int) -> int:
  """b = B / count for shard ``index`` of ``count``; ValueError if B does not split."""
  if count < 1 or batch_size % count or not 0 <= index < count:
    raise ValueError(f"cannot take shard {index} of {count} of {batch_size} streams: "
                     f"choose a number of devices that divides {batch_size}")
  return batch_size // count


def describe(task) -> dict:
  """The entries every task's ``describe()`` starts from: its specs and baselines."""
  return {"inputs": specs.to_json(task.input_spec), "outputs": specs.to_json(task.output_spec),
          "baselines": {k: float(v) for k, v in task.baselines.items()},
          "baseline": float(task.baseline)}


def uniform_bits(num_classes: int) -> float:
  """log2 K: the cross-entropy in bits of guessing K classes uniformly."""
  return math.log2(num_classes)


@dataclasses.dataclass
class Setup:
  """What a task entry's ``build`` gives the run (:func:`ok_tf.experiment.train`).

  Attributes:
    task: the task object (the protocol above).
    config: the run's config with values the task filled in (e.g. a text's fingerprint),
      or None for the config as given.
    validation: an evaluation hook (:class:`ok_tf.validation.Validation`), or None.
    vocabulary: the symbols of a text task (recorded in vocab.json), or None.
    results: ``results(run) -> dict``, the task's entries of results.json (the finished
      run as a :class:`ok_tf.runs.Run`); None: :func:`default_results`.
  """
  task: Any
  config: Any = None
  validation: Any = None
  vocabulary: Any = None
  results: Optional[Callable[[Any], dict]] = None


def loss_summary(rows: list[dict], column: str, tail: float = 0.1) -> dict:
  """The last row's loss and the mean over the last ``tail`` fraction of the rows."""
  values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
  if not values:
    return {"final_loss": None, "tail_loss": None}
  count = max(1, int(math.ceil(tail * len(values))))
  return {"final_loss": values[-1], "tail_loss": sum(values[-count:]) / count}


def default_results(run, task) -> dict:
  """results.json of a task without its own: the loss at the end and over the last tenth
  of the rows, in the task's unit, beside its baselines; steps, characters, time."""
  rows = run.metrics
  last, wall = rows[-1], float(rows[-1]["wall_time"])
  step = int(last["step"])
  out = {"loss_unit": task.output_spec.unit,
         **loss_summary(rows, task.output_spec.loss_column),
         "baselines": {k: float(v) for k, v in task.baselines.items()},
         "steps": step, "chars": int(last["chars"]), "wall_time": wall,
         "steps_per_sec": step / wall if wall > 0 else None}
  return out


@dataclasses.dataclass(frozen=True)
class Entry:
  """A task in the registry (:data:`ok_tf.tasks.TASKS`).

  Attributes:
    name: the task's name (``--task``).
    help: one line for ``--help``.
    options: a dataclass of the task's own configuration fields; each field's metadata
      ``help`` is its flag's help (``choices`` makes it an enum), its default the flag's.
    presets: preset name → values of the run's config (shared and own fields).
    build: ``build(cfg, resume) -> Setup``; it may raise the errors in ``errors``, which
      stop the script with one line.
    errors: exception types of ``build`` that mean bad input (one line, no traceback).
    check: ``check(cfg)`` raises ValueError with a one-line message when the task's own
      fields of a run's config are unusable (before anything is built); None: no rules.
  """
  name: str
  help: str
  options: type
  presets: dict
  build: Callable[[Any, bool], Setup]
  errors: tuple = ()
  check: Optional[Callable[[Any], None]] = None


def need(condition: bool, message: str) -> None:
  """ValueError(message) unless ``condition``: the rules of an entry's ``check``."""
  if not condition:
    raise ValueError(message)


def option(default, help: str, choices=None, **rules):  # pylint: disable=redefined-builtin
  """A task config field with its flag's help (and choices), and the rules of
  :func:`ok_tf.config.field`: ``resume`` ("fixed", "may_change", "per_process"),
  ``absent`` (its value in a config.json written before it existed), ``distinguishes``
  (runs that differ in it are different settings)."""
  metadata = {"help": help, **rules}
  if choices is not None:
    metadata["choices"] = tuple(choices)
  return dataclasses.field(default=default, metadata=metadata)
