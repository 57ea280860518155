"""Configuration in one place: a dataclass per task, presets by name, the absl flags.

A run's config is :class:`TrainConfig` (model, method, optimiser, schedule, devices)
followed by its task's own fields (the ``options`` of its registry entry,
:mod:`ok_tf.tasks`): :func:`config_class`. The presets are the task's. ``python -m
ok_tf.train``, ``train_copy.py`` and ``train_ptb.py`` define their flags with
:func:`define_flags`, then :func:`from_flags` applies the preset, overrides it with the
flags the user set, validates everything (one-line errors before any work) and expands
the learning-rate × seed grid into one config per run. ``train_ptb.py --train_file=…``
trains on any text instead of PTB (docs/protocol.md, "Any text"): the task ``"text"``,
with the same fields and presets and the tokenisation of the file (``"characters"``, or
``"ids"`` for a ``.npy`` array).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import time
from typing import Optional

from absl import flags

from ok_tf import estimators
from ok_tf import runs
from ok_tf import tasks
from ok_tf import training
from ok_tf.data import text as text_data

CELLS = ("rhn", "tanh", "lstm")
# The methods (names, rank rule, truncation) are those of the registry estimators.METHODS.
STRATEGIES = ("none", "mirrored", "multi_worker")
#: The task of train_ptb.py given --train_file: any text (docs/protocol.md, "Any text").
TEXT_TASK = "text"


class ConfigError(ValueError):
  """A bad flag or configuration value; the message says what to change."""


@dataclasses.dataclass
class TrainConfig:
  """Fields shared by both scripts (one run: one learning rate, one seed)."""
  task: str = ""
  preset: str = "quick"
  method: str = "ok"
  rank: Optional[int] = None          # methods that take a rank (estimators.Method.rank_for)
  truncation: Optional[int] = None    # methods that take a truncation length (tbptt)
  cell: str = "rhn"
  units: int = 32
  batch_size: int = 16
  lr: float = 10 ** -2.5
  clip: float = 1.0                   # global-norm clip of W's gradient; 0 disables
  grad_scale: str = "published"       # W's gradient / B before clip and Adam; "mean": not
  adam_epsilon: float = 1e-8          # TF1's default, as in the paper (Keras 3's is 1e-7)
  steps: int = 10_000                 # characters per stream
  seed: int = 0
  dtype: str = "float32"
  log_every: int = 1000
  checkpoint_every: int = 10_000
  deterministic: bool = True          # tf.config.experimental.enable_op_determinism
  shadow_exact: bool = False
  strategy: str = "none"              # "mirrored": streams split across devices;
                                      # "multi_worker": across machines (TF_CONFIG)
  devices: str = ""                   # mirrored: comma-separated devices (default: all GPUs)
  cpu_devices: int = 0                # split the CPU into this many logical devices
  max_minutes: float = 0.0            # stop (with a checkpoint) after this wall time; 0: none
  run_dir: str = ""


@functools.cache
def config_class(task: str) -> type:
  """The config dataclass of ``task``'s runs: :class:`TrainConfig`'s fields, then the
  task's own (its entry's ``options``), with ``task`` defaulting to its name."""
  entry = tasks.get(task)
  own = [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata))
         for f in dataclasses.fields(entry.options)]
  name = "".join(part.capitalize() for part in task.split("_")) + "Config"
  return dataclasses.make_dataclass(
      name, [("task", str, dataclasses.field(default=task))] + own, bases=(TrainConfig,),
      namespace={"__doc__": f"A run of task {task!r}: {entry.help}.",
                 "__module__": __name__})


#: The copy task's runs (docs/protocol.md, "Copy task with curriculum").
CopyConfig = config_class("copy")
#: Character-level Penn Treebank's runs (docs/protocol.md, "Character-level Penn Treebank");
#: with ``train_file`` any text's (task ``"text"``, docs/protocol.md, "Any text").
PTBConfig = config_class("ptb")


def presets(task: str) -> dict:
  """The presets of ``task``: name → values of its run config."""
  return tasks.get(task).presets


def parse_number(text: str) -> float:
  """A learning rate such as ``0.001``, ``1e-3``, ``10^-3.5`` or ``10**-3.5``."""
  text = text.strip()
  m = re.fullmatch(r"10\s*(?:\^|\*\*)\s*([-+]?[0-9.]+)", text)
  try:
    return 10 ** float(m.group(1)) if m else float(text)
  except ValueError:
    raise ConfigError(f"cannot read {text!r} as a number (examples: 0.001, 1e-3, 10^-3.5)")


def task_options(task_names) -> dict[str, tuple[dataclasses.Field, list[str]]]:
  """The tasks' own config fields by name: ``name → (field, the tasks that have it)``.

  Two tasks may share a field (``ptb`` and ``text`` share all theirs) if it has one type.
  """
  fields = {}
  for task in task_names:
    for field in dataclasses.fields(tasks.get(task).options):
      if field.name in fields:
        known, owners = fields[field.name]
        if known.type != field.type:
          raise TypeError(f"tasks {owners[0]} and {task} both have a field {field.name} of "
                          f"types {known.type} and {field.type}: rename one")
        owners.append(task)
      else:
        fields[field.name] = (field, [task])
  return fields


def _define_option(field: dataclasses.Field, owners: list[str]) -> None:
  """The flag of a task's own field (default None: the config's, from the preset)."""
  help_text = field.metadata.get("help", "")
  shown = f" Default {field.default!r}." if field.default not in ("", None) else ""
  help_text = f"{help_text}{shown} [task {', '.join(owners)}]"
  choices = field.metadata.get("choices")
  kind = field.type if isinstance(field.type, str) else field.type.__name__
  if choices:
    flags.DEFINE_enum(field.name, None, list(choices), help_text)
  elif kind == "bool":
    flags.DEFINE_boolean(field.name, None, help_text)
  elif kind == "int":
    flags.DEFINE_integer(field.name, None, help_text)
  elif kind == "float":
    flags.DEFINE_float(field.name, None, help_text)
  else:
    flags.DEFINE_string(field.name, None, help_text)


def define_flags(task: str | None = None) -> None:
  """Define the absl flags of a training script: ``train_{task}.py`` for one task (the
  help shows each preset's defaults), or with ``task=None`` ``python -m ok_tf.train``,
  whose ``--task`` chooses any registered task (every task's own flags are defined)."""
  names = [task] if task else tasks.names()
  preset_names = sorted({p for name in names for p in presets(name)})
  fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

  def preset(name: str) -> str:
    """' Default from --preset: quick 32, cpu 64, paper 128.' for a preset-filled flag."""
    if task is None:
      return " Default from the task's --preset."
    def shown(value):
      if name == "lr":
        return f"10^{math.log10(value):g}"
      return f"{value:g}" if isinstance(value, float) else str(value)
    values = [f"{p} {shown(presets(task)[p].get(name, fields[name]))}" for p in preset_names]
    return f" Default from --preset: {', '.join(values)}."

  if task is None:
    flags.DEFINE_enum("task", None, names, "The task: " + "; ".join(
        f"{name}: {tasks.get(name).help}" for name in names) + ".")
  flags.DEFINE_enum("preset", "quick", preset_names,
                    "Named configuration; other flags override it.")
  ranked = " / ".join(n for n, m in estimators.METHODS.items() if m.takes_rank)
  truncated = " / ".join(n for n, m in estimators.METHODS.items() if m.takes_truncation)
  flags.DEFINE_string("method", "ok", f"One of {', '.join(estimators.METHODS)}.")
  flags.DEFINE_integer("rank", None, f"Rank r of {ranked}." + preset("rank"))
  flags.DEFINE_integer("truncation", None,
                       f"Truncation length T of {truncated}." + preset("truncation"))
  flags.DEFINE_string("cell", None, f"One of {', '.join(CELLS)}." + preset("cell"))
  flags.DEFINE_integer("units", None, "Hidden units n." + preset("units"))
  flags.DEFINE_integer("batch_size", None, "Streams B." + preset("batch_size"))
  flags.DEFINE_list("lr", None, "Learning rate(s), e.g. 10^-3.5 or 1e-3,3e-4 (a list runs a grid)."
                    + preset("lr"))
  flags.DEFINE_float("clip", None, "Clip W's gradient to this global norm (0: no clipping)."
                    + preset("clip"))
  flags.DEFINE_enum("grad_scale", None, list(training.GRAD_SCALES),
                    "Scale of W's gradient before clipping and Adam: mean (the batch-mean "
                    "gradient) or published (the batch mean divided by B again, as the "
                    "published runs; docs/protocol.md)." + preset("grad_scale"))
  flags.DEFINE_float("adam_epsilon", 1e-8, "Adam's ε (TF1's default 1e-8, as in the paper).")
  flags.DEFINE_integer("steps", None, "Training steps (time steps per stream)." + preset("steps"))
  flags.DEFINE_list("seed", ["0"], "Seed(s); a list runs one run per seed.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Floating point type.")
  flags.DEFINE_integer("log_every", None, "Steps between metrics rows / progress lines."
                       + preset("log_every"))
  flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints." + preset("checkpoint_every"))
  flags.DEFINE_boolean("deterministic", True, "Enable TensorFlow op determinism.")
  flags.DEFINE_boolean("shadow_exact", False,
                       "Run exact RTRL beside the estimator and log the gradient's cosine "
                       "and relative error (small networks only).")
  flags.DEFINE_enum("strategy", None, list(STRATEGIES),
                    "none: one device; mirrored: tf.distribute.MirroredStrategy, the streams "
                    "split evenly across the devices, each keeping its own streams' state; "
                    "multi_worker: the same across machines (MultiWorkerMirroredStrategy, "
                    "one process per machine, each with its TF_CONFIG; docs/cluster.md).")
  flags.DEFINE_string("devices", None, "mirrored: comma-separated devices, e.g. "
                      "/gpu:0,/gpu:1 (default: all GPUs, else the CPU).")
  flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical devices "
                       "(to try --strategy=mirrored without GPUs).")
  flags.DEFINE_float("max_minutes", None, "Stop with a checkpoint once this many minutes of "
                     "training have passed in this process; continue later with --resume.")
  flags.DEFINE_string("run_dir", None, "Run directory (default runs/<task>/<method>_<time>).")
  flags.DEFINE_boolean("resume", False, "Continue the run in --run_dir from its last checkpoint, with its "
                       "stored config (flags given now must agree with it, except "
                       f"--{', --'.join(sorted(runs.RESUME_MAY_CHANGE - {'resume'}))}).")
  for field, owners in task_options(names).values():
    _define_option(field, owners)


def choose_task(task: str | None, fv) -> str:
  """The task of a run: the script's, or ``--task`` (``ok_tf.train``); PTB with
  ``--train_file`` is the text task."""
  if task is None:
    task = fv.task
    if task is None:
      raise ConfigError(f"--task is required: one of {', '.join(tasks.names())}")
  if task == "ptb" and "train_file" in fv and fv.train_file:
    for name in ("data_dir", "tokenization"):
      if fv[name].present:
        raise ConfigError(f"--{name} is for PTB; --train_file is read one symbol per character "
                          "(token ids from a .npy file): drop one of the two")
    task = TEXT_TASK
  return task


def from_flags(task: str | None = None, flag_values=None) -> tuple[list[TrainConfig], bool]:
  """Configs (one per learning rate × seed) from parsed flags, and the resume flag.

  ``task``: the script's task, or None for ``--task`` (:func:`define_flags`).
  """
  fv = flag_values or flags.FLAGS
  task = choose_task(task, fv)
  entry = tasks.get(task)
  cls = config_class(task)
  names = [f.name for f in dataclasses.fields(cls)]
  own = {f.name for f in dataclasses.fields(entry.options)}
  if "task" in fv:   # ok_tf.train: the other tasks' flags must not be given
    for name, (_, owners) in task_options(tasks.names()).items():
      if name not in own and fv[name].present:
        raise ConfigError(f"--{name} is a flag of task {' and '.join(owners)}, not of "
                          f"{task}: drop it (python -m ok_tf.train --task={task} --help "
                          "lists this task's flags)")
  if fv.preset not in entry.presets:
    raise ConfigError(f"task {task} has no preset {fv.preset!r}; choose one of "
                      f"{', '.join(entry.presets)}")
  values = dict(entry.presets[fv.preset])
  values["preset"] = fv.preset
  explicit = {}
  for name in names:
    if name in ("task", "preset", "lr", "seed", "rank", "truncation"):
      continue
    if name in fv and fv[name].value is not None:
      explicit[name] = fv[name].value
  values.update(explicit)
  if task == TEXT_TASK and values.get("train_file"):
    values["tokenization"] = text_data.tokenization_of(values["train_file"])
  method = values.get("method", "ok")
  spec = estimators.METHODS.get(method)      # None: unknown, which validate reports
  # rank / truncation: flags must fit the method; the preset fills in defaults.
  if spec is not None:
    if fv.rank is not None:
      requested = fv.rank
    else:
      requested = values.get("rank") if spec.takes_rank else None
    try:
      values["rank"] = spec.rank_for(requested, "--rank")
    except ValueError as e:
      raise ConfigError(str(e))
  truncated = [name for name, m in estimators.METHODS.items() if m.takes_truncation]
  if fv.truncation is not None:
    if method not in truncated:
      raise ConfigError(f"--truncation is for {' and '.join(truncated)}; {method} takes none")
    values["truncation"] = fv.truncation
  elif method not in truncated:
    values["truncation"] = None
  lrs = [parse_number(x) for x in fv.lr] if fv.lr else [values["lr"]]
  try:
    seeds = [int(s) for s in fv.seed]
  except ValueError:
    raise ConfigError(f"--seed takes integers, got {','.join(fv.seed)!r}")
  base_dir = fv.run_dir or f"runs/{task}/{method}_{time.strftime('%Y%m%d-%H%M%S')}"
  if fv.resume and not fv.run_dir:
    raise ConfigError("--resume needs --run_dir (the run to continue)")
  configs = []
  grid = list(itertools.product(lrs, seeds))
  for lr, seed in grid:
    run_dir = base_dir
    if len(grid) > 1:
      run_dir = f"{base_dir}/lr{lr:.3g}_seed{seed}"
    cfg = cls(**{**{k: v for k, v in values.items() if k in names}, "lr": lr, "seed": seed,
                 "run_dir": run_dir})
    if fv.resume:
      cfg = resumed(cfg, fv)
    validate(cfg)
    configs.append(cfg)
  return configs, bool(fv.resume)


# Config fields that describe one invocation, not the run: a resume does not inherit them.
PER_PROCESS = ("run_dir", "max_minutes")


def resumed(cfg: TrainConfig, flag_values=None) -> TrainConfig:
  """The config that continues the run in ``cfg.run_dir``: its stored config.json, with
  the values of the flags given on this command line.

  So ``--run_dir=… --resume`` alone continues a run made with any flags. A flag given now
  that differs from the stored value is kept, and :class:`ok_tf.runs.RunDir` refuses it
  unless it is one of ``runs.RESUME_MAY_CHANGE``. ``cfg`` is returned unchanged when the
  directory holds no run yet. ``run_dir`` and ``max_minutes`` (a budget of this process)
  are never taken from the stored config.
  """
  fv = flag_values or flags.FLAGS
  if not runs.is_run(cfg.run_dir):
    return cfg
  stored = runs.Run(cfg.run_dir).config
  values = {}
  for field in dataclasses.fields(cfg):
    name = field.name
    if name in PER_PROCESS or (name in fv and fv[name].present):
      continue
    if name in stored:
      values[name] = stored[name]
    elif name in runs.ABSENT_MEANS:
      values[name] = runs.ABSENT_MEANS[name]
  return dataclasses.replace(cfg, **values)


def validate(cfg: TrainConfig) -> None:
  """Raise :class:`ConfigError` with a one-line explanation of the first bad value."""
  def need(ok, message):
    if not ok:
      raise ConfigError(message)

  need(cfg.method in estimators.METHODS,
       f"unknown --method {cfg.method!r}; choose one of {', '.join(estimators.METHODS)}")
  need(cfg.cell in CELLS, f"unknown --cell {cfg.cell!r}; choose one of {', '.join(CELLS)}")
  spec = estimators.METHODS[cfg.method]
  try:
    spec.rank_for(cfg.rank, "--rank")
  except ValueError as e:
    raise ConfigError(str(e))
  if spec.takes_truncation:
    need(cfg.truncation is not None and cfg.truncation >= 1, f"--truncation must be a positive integer, got {cfg.truncation}")
    need(cfg.log_every % cfg.truncation == 0, f"--log_every ({cfg.log_every}) must be a multiple of --truncation ({cfg.truncation})")
  need(cfg.units >= 1, f"--units must be positive, got {cfg.units}")
  need(cfg.batch_size >= 1, f"--batch_size must be positive, got {cfg.batch_size}")
  need(cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be positive, got {cfg.lr}")
  need(cfg.grad_scale in training.GRAD_SCALES,
       f"unknown --grad_scale {cfg.grad_scale!r}; choose one of {', '.join(training.GRAD_SCALES)}")
  need(cfg.clip >= 0, f"--clip must be ≥ 0 (0 disables clipping), got {cfg.clip}")
  need(cfg.steps >= 1, f"--steps must be positive, got {cfg.steps}")
  need(cfg.log_every >= 1, f"--log_every must be positive, got {cfg.log_every}")
  need(cfg.checkpoint_every >= cfg.log_every and cfg.checkpoint_every % cfg.log_every == 0,
       f"--checkpoint_every ({cfg.checkpoint_every}) must be a multiple of --log_every ({cfg.log_every})")
  need(cfg.steps % cfg.log_every == 0 or not spec.takes_truncation
       or cfg.steps % cfg.truncation == 0,
       f"--steps ({cfg.steps}) must be a multiple of --truncation ({cfg.truncation}) for {cfg.method}")
  if cfg.shadow_exact:
    need(cfg.method in estimators.ESTIMATORS,
         f"--shadow_exact compares an online estimator with exact RTRL; {cfg.method} has none")
  need(cfg.strategy in STRATEGIES, f"unknown --strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")
  need(cfg.max_minutes >= 0, f"--max_minutes must be ≥ 0 (0: no limit), got {cfg.max_minutes}")
  need(cfg.cpu_devices >= 0, f"--cpu_devices must be ≥ 0, got {cfg.cpu_devices}")
  if cfg.strategy != "mirrored":
    need(not cfg.devices, "--devices is for --strategy=mirrored")
    need(not cfg.cpu_devices, "--cpu_devices splits the CPU for --strategy=mirrored; add "
         "--strategy=mirrored or drop --cpu_devices")
  try:
    entry = tasks.get(cfg.task)
  except ValueError as e:
    raise ConfigError(str(e))
  if entry.check is not None:
    try:
      entry.check(cfg)
    except ValueError as e:
      raise ConfigError(str(e))
