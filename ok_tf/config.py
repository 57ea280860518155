"""Configuration in one place: a dataclass per task, its fields' rules, presets, the flags.

A run's config is :class:`TrainConfig` (model, method, optimiser, schedule, devices)
followed by its task's own fields (the ``options`` of its registry entry,
:mod:`ok_tf.tasks`): :func:`config_class`. The presets are the task's. Each field carries
its rules in its metadata (:func:`field`): its flag's help, name and default, whether a
resume may change it, what a config.json written before it existed means by lacking it,
whether runs that differ in it are different settings. So the flags of ``python -m
ok_tf.train``, ``train_copy.py`` and ``train_ptb.py`` are generated from the fields
(:func:`define_flags`); :func:`from_flags` applies the preset, overrides it with the flags
the user set, validates everything (one-line errors before any work) and expands the
learning-rate × seed grid into one config per run; :func:`resumed` and
:func:`merge_resumed` apply the resume rules, :func:`distinguishing_keys` the analysis'.
``train_ptb.py --train_file=…`` trains on any text instead of PTB (docs/protocol.md,
"Any text"): the task ``"text"``, with the same fields and presets and the tokenisation
of the file (``"characters"``, or ``"ids"`` for a ``.npy`` array).
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

from ok_tf import cells
from ok_tf import estimators
from ok_tf import hyperparameters
from ok_tf import runs
from ok_tf import tasks
from ok_tf import training
from ok_tf.data import text as text_data

# The cells are those of the registry cells.CELLS, the methods (names, rank rule,
# truncation, hyperparameters) those of estimators.METHODS.
STRATEGIES = ("none", "mirrored", "multi_worker")
#: The task of train_ptb.py given --train_file: any text (docs/protocol.md, "Any text").
TEXT_TASK = "text"


class ConfigError(ValueError):
  """A bad flag or configuration value; the message says what to change."""


# ----------------------------------------------------------------------------
# The rules of a config field, in its metadata
#
# Every config field (TrainConfig's, a task's ``options``, any other dataclass that
# config_class adds) carries its rules in ``dataclasses.field(metadata=...)``:
#   help           the flag's help (a string, or a function returning it)
#   flag           the flag's name (default: the field's)
#   flag_default   PRESET: the flag defaults to None and the preset fills the value in (the
#                  help lists each preset's); OWN: the flag defaults to the field's default;
#                  None: the flag defaults to None, the help shows nothing. A field without
#                  it (a task's option) is an option: default None, its default in the help.
#   choices        allowed values (an enum flag; a function returning them is allowed)
#   grid           a comma-separated list: one run per value (lr, seed)
#   resume         FIXED: a resumed run must keep it; MAY_CHANGE: a resume may change it
#                  (the stored value is kept unless the flag is given); PER_PROCESS: a
#                  budget or place of one invocation, never taken from the stored config
#   absent         the value of the field in a config.json written before it existed
#   distinguishes  runs that differ in it are different settings (analysis grouping)

FIXED, MAY_CHANGE, PER_PROCESS = "fixed", "may_change", "per_process"
PRESET, OWN = "preset", "own"
_NO_ABSENT = object()


def field(default, help, *, flag: str | None = None,   # pylint: disable=redefined-builtin
          flag_default: str | None = PRESET, choices=None, grid: bool = False,
          resume: str = FIXED, absent=_NO_ABSENT, distinguishes: bool = False):
  """A config field with its rules (see above)."""
  metadata = {"help": help, "flag_default": flag_default, "grid": grid, "resume": resume,
              "distinguishes": distinguishes}
  if flag is not None:
    metadata["flag"] = flag
  if choices is not None:
    metadata["choices"] = choices
  if absent is not _NO_ABSENT:
    metadata["absent"] = absent
  return dataclasses.field(default=default, metadata=metadata)


def _methods_with(attribute: str) -> str:
  return " / ".join(n for n, m in estimators.METHODS.items() if getattr(m, attribute))


@dataclasses.dataclass
class TrainConfig:
  """Fields shared by every task (one run: one learning rate, one seed)."""
  task: str = field("", "The task.", flag_default=OWN)
  preset: str = field("quick", "Named configuration; other flags override it.",
                      flag_default=OWN)
  method: str = field(estimators.default(), lambda: f"One of {', '.join(estimators.METHODS)}.",
                      flag_default=OWN)
  # methods that take a rank (estimators.Method.rank_for) / a truncation length (tbptt)
  rank: Optional[int] = field(None, lambda: f"Rank r of {_methods_with('takes_rank')}.")
  truncation: Optional[int] = field(
      None, lambda: f"Truncation length T of {_methods_with('takes_truncation')}.")
  cell: str = field(cells.default(), lambda: f"One of {', '.join(cells.CELLS)}.",
                    distinguishes=True)
  units: int = field(32, "Hidden units n.", distinguishes=True)
  batch_size: int = field(16, "Streams B.", distinguishes=True)
  dtype: str = field("float32", "Floating point type.", flag_default=OWN,
                     choices=("float32", "float64"), distinguishes=True)
  lr: float = field(10 ** -2.5, "Learning rate(s), e.g. 10^-3.5 or 1e-3,3e-4 (a list runs a "
                    "grid).", grid=True)
  grad_scale: str = field(
      "published", "Scale of W's gradient before clipping and Adam: mean (the batch-mean "
      "gradient) or published (the batch mean divided by B again, as the published runs; "
      "docs/protocol.md).", choices=lambda: list(training.GRAD_SCALES), absent="mean",
      distinguishes=True)
  clip: float = field(1.0, "Clip W's gradient to this global norm (0: no clipping).",
                      distinguishes=True)
  adam_epsilon: float = field(1e-8, "Adam's ε (TF1's default 1e-8, as in the paper).",
                              flag_default=OWN, distinguishes=True)   # Keras 3's is 1e-7
  steps: int = field(10_000, "Training steps (time steps per stream).", resume=MAY_CHANGE)
  seed: int = field(0, "Seed(s); a list runs one run per seed.", flag_default=OWN, grid=True)
  log_every: int = field(1000, "Steps between metrics rows / progress lines.",
                         resume=MAY_CHANGE)
  checkpoint_every: int = field(10_000, "Steps between checkpoints.", resume=MAY_CHANGE)
  deterministic: bool = field(True, "Enable TensorFlow op determinism.", flag_default=OWN)
  shadow_exact: bool = field(False, "Run exact RTRL beside the estimator and log the "
                             "gradient's cosine and relative error (small networks only).",
                             flag_default=OWN)
  strategy: str = field(
      "none", "none: one device; mirrored: tf.distribute.MirroredStrategy, the streams split "
      "evenly across the devices, each keeping its own streams' state; multi_worker: the "
      "same across machines (MultiWorkerMirroredStrategy, one process per machine, each "
      "with its TF_CONFIG; docs/cluster.md).", flag_default=None, choices=STRATEGIES,
      absent="none")
  devices: str = field("", "mirrored: comma-separated devices, e.g. /gpu:0,/gpu:1 (default: "
                       "all GPUs, else the CPU).", flag_default=None, absent="")
  cpu_devices: int = field(0, "Split the CPU into this many logical devices (to try "
                           "--strategy=mirrored without GPUs).", flag_default=None, absent=0)
  max_minutes: float = field(0.0, "Stop with a checkpoint once this many minutes of training "
                             "have passed in this process; continue later with --resume.",
                             flag_default=None, resume=PER_PROCESS, absent=0.0)
  run_dir: str = field("", "Run directory (default runs/<task>/<method>_<time>).",
                       flag_default=None, resume=PER_PROCESS)


def flag_name(f: dataclasses.Field) -> str:
  """The flag of config field ``f``."""
  return f.metadata.get("flag", f.name)


def help_of(f: dataclasses.Field) -> str:
  """The help text of config field ``f`` (without the defaults)."""
  text = f.metadata.get("help", "")
  return text() if callable(text) else text


def choices_of(f: dataclasses.Field):
  """The allowed values of config field ``f``, None if any value of its type is."""
  choices = f.metadata.get("choices")
  return list(choices()) if callable(choices) else choices


def kind_of(f: dataclasses.Field) -> str:
  """"bool", "int", "float" or "str": the type of field ``f`` (``Optional[int]`` is int)."""
  kind = f.type if isinstance(f.type, str) else f.type.__name__
  return kind.removeprefix("Optional[").removesuffix("]")


_TASK_METADATA = TrainConfig.__dataclass_fields__["task"].metadata


def model_options() -> list[tuple[str, type, dataclasses.Field]]:
  """The config fields of the methods' and cells' declared hyperparameters
  (:mod:`ok_tf.hyperparameters`): ``ok_balance``, ``uoro_eps``, ``leaky_alpha``…"""
  return (hyperparameters.config_fields(estimators.METHODS, "method")
          + hyperparameters.config_fields(cells.CELLS, "cell"))


def recorded(cfg: TrainConfig) -> dict:
  """What a run's config.json holds: every field of ``cfg``, except the declared
  hyperparameters of cells and methods other than the run's (an RHN run records no
  ``leaky_alpha``). A reader, a resume and the analysis take a missing one as its
  ``absent`` value, the default."""
  owners = {None, f"method {cfg.method}", f"cell {cfg.cell}"}    # None: not a hyperparameter
  return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
          if f.metadata.get("owner") in owners}


@functools.cache
def config_class(task: str) -> type:
  """The config dataclass of ``task``'s runs: :class:`TrainConfig`'s fields, the methods'
  and cells' hyperparameters (:func:`model_options`), then the task's own (its entry's
  ``options``), with ``task`` defaulting to its name."""
  entry = tasks.get(task)
  own = [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata))
         for f in dataclasses.fields(entry.options)]
  own = model_options() + own
  name = "".join(part.capitalize() for part in task.split("_")) + "Config"
  return dataclasses.make_dataclass(
      name, [("task", str, dataclasses.field(default=task, metadata=_TASK_METADATA))] + own,
      bases=(TrainConfig,),
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
    for f in dataclasses.fields(tasks.get(task).options):
      if f.name in fields:
        known, owners = fields[f.name]
        if known.type != f.type:
          raise TypeError(f"tasks {owners[0]} and {task} both have a field {f.name} of "
                          f"types {known.type} and {f.type}: rename one")
        owners.append(task)
      else:
        fields[f.name] = (f, [task])
  return fields


def all_fields() -> dict[str, dataclasses.Field]:
  """Every config field of every task's runs, by name (TrainConfig's first)."""
  found = {}
  for task in tasks.names():
    for f in dataclasses.fields(config_class(task)):
      found.setdefault(f.name, f)
  return found


# ----------------------------------------------------------------------------
# Flags


def _define(f: dataclasses.Field, default, help_text: str, fv) -> None:
  """The absl flag of config field ``f``, of its type (a list for a grid)."""
  name, choices, kind = flag_name(f), choices_of(f), kind_of(f)
  if f.metadata.get("grid"):
    flags.DEFINE_list(name, default, help_text, flag_values=fv)
  elif choices:
    flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=fv)
  elif kind == "bool":
    flags.DEFINE_boolean(name, default, help_text, flag_values=fv)
  elif kind == "int":
    flags.DEFINE_integer(name, default, help_text, flag_values=fv)
  elif kind == "float":
    flags.DEFINE_float(name, default, help_text, flag_values=fv)
  else:
    flags.DEFINE_string(name, default, help_text, flag_values=fv)


def _define_option(f: dataclasses.Field, owner: str, fv) -> None:
  """The flag of a field of ``owner``'s own (e.g. "task ptb, text"): default None (the
  config's value, from the preset), the field's default and its owner in the help."""
  shown = f" Default {f.default!r}." if f.default not in ("", None) else ""
  _define(f, None, f"{help_of(f)}{shown} [{owner}]", fv)


def _preset_help(task: str | None, f: dataclasses.Field, preset_names) -> str:
  """' Default from --preset: quick 32, cpu 64, paper 128.' for a preset-filled flag."""
  if task is None:
    return " Default from the task's --preset."
  def shown(value):
    if f.name == "lr":
      return f"10^{math.log10(value):g}"
    return f"{value:g}" if isinstance(value, float) else str(value)
  values = [f"{p} {shown(presets(task)[p].get(f.name, f.default))}" for p in preset_names]
  return f" Default from --preset: {', '.join(values)}."


def _define_field(task: str | None, f: dataclasses.Field, preset_names, fv) -> None:
  """The flag of a field shared by every task, defaulting as its ``flag_default`` says."""
  mode = f.metadata.get("flag_default")
  if mode == OWN:
    default = [str(f.default)] if f.metadata.get("grid") else f.default
    _define(f, default, help_of(f), fv)
  elif mode == PRESET:
    _define(f, None, help_of(f) + _preset_help(task, f, preset_names), fv)
  else:
    _define(f, None, help_of(f), fv)


def may_change_on_resume() -> frozenset[str]:
  """The config keys a resumed run may change (``resume``: MAY_CHANGE or PER_PROCESS):
  they do not change the run's trajectory, only its length, logging and bookkeeping."""
  return frozenset(name for name, f in all_fields().items()
                   if f.metadata.get("resume", FIXED) != FIXED)


def define_flags(task: str | None = None, flag_values=None) -> None:
  """Define the absl flags of a training script: ``train_{task}.py`` for one task (the
  help shows each preset's defaults), or with ``task=None`` ``python -m ok_tf.train``,
  whose ``--task`` chooses any registered task (every task's own flags are defined).

  Every flag but ``--resume`` is a config field's, generated from its metadata.
  ``flag_values``: where to define them (default ``absl.flags.FLAGS``)."""
  fv = flags.FLAGS if flag_values is None else flag_values
  names = [task] if task else tasks.names()
  preset_names = sorted({p for name in names for p in presets(name)})
  if task is None:
    flags.DEFINE_enum("task", None, names, "The task: " + "; ".join(
        f"{name}: {tasks.get(name).help}" for name in names) + ".", flag_values=fv)
  for f in dataclasses.fields(TrainConfig):
    if f.name == "preset":
      flags.DEFINE_enum("preset", f.default, preset_names, help_of(f), flag_values=fv)
    elif f.name != "task":
      _define_field(task, f, preset_names, fv)
  flags.DEFINE_boolean("resume", False, "Continue the run in --run_dir from its last "
                       "checkpoint, with its stored config (flags given now must agree with "
                       "it, except --" + ", --".join(sorted(may_change_on_resume())) + ").",
                       flag_values=fv)
  for f, owners in task_options(names).values():
    _define_option(f, f"task {', '.join(owners)}", fv)
  for f in dataclasses.fields(dataclasses.make_dataclass("ModelOptions", model_options())):
    _define_option(f, f.metadata["owner"], fv)


# ----------------------------------------------------------------------------
# From flags to configs


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


def check_task_flags(task: str, fv) -> None:
  """``ok_tf.train``: the flags of the other tasks must not be given."""
  if "task" not in fv:
    return
  own = {f.name for f in dataclasses.fields(tasks.get(task).options)}
  for name, (f, owners) in task_options(tasks.names()).items():
    if name not in own and fv[flag_name(f)].present:
      raise ConfigError(f"--{flag_name(f)} is a flag of task {' and '.join(owners)}, not of "
                        f"{task}: drop it (python -m ok_tf.train --task={task} --help "
                        "lists this task's flags)")


def preset_values(task: str, fv) -> dict:
  """The values of ``--preset`` for ``task``, overridden by every flag given a value
  (the grid, rank and truncation aside: :func:`grid`, :func:`method_values`)."""
  entry = tasks.get(task)
  if fv.preset not in entry.presets:
    raise ConfigError(f"task {task} has no preset {fv.preset!r}; choose one of "
                      f"{', '.join(entry.presets)}")
  values = dict(entry.presets[fv.preset], preset=fv.preset)
  for f in dataclasses.fields(config_class(task)):
    if f.name in ("task", "preset", "rank", "truncation") or f.metadata.get("grid"):
      continue
    if flag_name(f) in fv and fv[flag_name(f)].value is not None:
      values[f.name] = fv[flag_name(f)].value
  if task == TEXT_TASK and values.get("train_file"):
    values["tokenization"] = text_data.tokenization_of(values["train_file"])
  return values


def method_values(values: dict, fv) -> dict:
  """``values`` with rank and truncation as the method takes them: a flag must fit the
  method, the preset fills in the defaults, a method without one gets None."""
  values = dict(values)
  method = values.get("method", estimators.default())
  spec = estimators.METHODS.get(method)      # None: unknown, which validate reports
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
  return values


def check_model_options(task: str, values: dict, fv) -> None:
  """A method's or cell's hyperparameter flag must belong to the run's method or cell."""
  chosen = {"method": values.get("method", estimators.default()),
            "cell": values.get("cell", cells.default())}
  for f in dataclasses.fields(config_class(task)):
    owner = f.metadata.get("owner")
    if owner and flag_name(f) in fv and fv[flag_name(f)].value is not None:
      kind, name = owner.split(" ", 1)
      if chosen.get(kind) != name:
        raise ConfigError(f"--{flag_name(f)} is a flag of {owner}, not of {kind} "
                          f"{chosen.get(kind)}: drop it or add --{kind}={name}")


def grid(values: dict, fv) -> list[tuple[float, int]]:
  """The (learning rate, seed) of every run: ``--lr`` × ``--seed``."""
  lrs = [parse_number(x) for x in fv.lr] if fv.lr else [values["lr"]]
  try:
    seeds = [int(s) for s in fv.seed]
  except ValueError:
    raise ConfigError(f"--seed takes integers, got {','.join(fv.seed)!r}")
  return list(itertools.product(lrs, seeds))


def from_flags(task: str | None = None, flag_values=None) -> tuple[list[TrainConfig], bool]:
  """Configs (one per learning rate × seed) from parsed flags, and the resume flag.

  ``task``: the script's task, or None for ``--task`` (:func:`define_flags`). A grid puts
  each run in ``--run_dir``/lr<lr>_seed<seed>; ``--resume`` continues each (:func:`resumed`).
  """
  fv = flags.FLAGS if flag_values is None else flag_values
  task = choose_task(task, fv)
  check_task_flags(task, fv)
  values = method_values(preset_values(task, fv), fv)
  check_model_options(task, values, fv)
  runs_of = grid(values, fv)
  if fv.resume and not fv.run_dir:
    raise ConfigError("--resume needs --run_dir (the run to continue)")
  started = time.strftime("%Y%m%d-%H%M%S")
  base_dir = fv.run_dir or f"runs/{task}/{values.get('method', estimators.default())}_{started}"
  cls = config_class(task)
  names = {f.name for f in dataclasses.fields(cls)}
  configs = []
  for lr, seed in runs_of:
    run_dir = f"{base_dir}/lr{lr:.3g}_seed{seed}" if len(runs_of) > 1 else base_dir
    cfg = cls(**{**{k: v for k, v in values.items() if k in names}, "lr": lr, "seed": seed,
                 "run_dir": run_dir})
    if fv.resume:
      cfg = resumed(cfg, fv)
    validate(cfg)
    configs.append(cfg)
  return configs, bool(fv.resume)


# ----------------------------------------------------------------------------
# Resuming


def absent_values() -> dict:
  """The value of every config key that has an ``absent`` rule: what a config.json
  written before the field existed means by lacking it."""
  return {name: f.metadata["absent"] for name, f in all_fields().items()
          if "absent" in f.metadata}


def resumed(cfg: TrainConfig, flag_values=None) -> TrainConfig:
  """The config that continues the run in ``cfg.run_dir``: its stored config.json, with
  the values of the flags given on this command line.

  So ``--run_dir=… --resume`` alone continues a run made with any flags. A flag given now
  that differs from the stored value is kept, and :func:`merge_resumed` refuses it unless
  the field's ``resume`` rule allows it. ``cfg`` is returned unchanged when the directory
  holds no run yet. PER_PROCESS fields (``run_dir``, ``max_minutes``) are never taken from
  the stored config; a field the stored config lacks takes its ``absent`` value.
  """
  fv = flags.FLAGS if flag_values is None else flag_values
  if not runs.is_run(cfg.run_dir):
    return cfg
  stored = runs.Run(cfg.run_dir).config
  values = {}
  for f in dataclasses.fields(cfg):
    given_now = flag_name(f) in fv and fv[flag_name(f)].present
    if f.metadata.get("resume") == PER_PROCESS or given_now:
      continue
    if f.name in stored:
      values[f.name] = stored[f.name]
    elif "absent" in f.metadata:
      values[f.name] = f.metadata["absent"]
  return dataclasses.replace(cfg, **values)


def merge_resumed(stored: dict, new: dict, run_dir="the run directory") -> dict:
  """The config a resumed run records: ``stored`` updated with ``new``.

  Raises:
    ok_tf.runs.RunDirError: the two differ in a key whose ``resume`` rule is FIXED (a key
      either lacks counts as its ``absent`` value: a stored config written before the
      field existed, or a hyperparameter of another cell or method, which
      :func:`recorded` leaves out); one line naming them.
  """
  may_change = may_change_on_resume() | {"resume"}   # early runs recorded the flag
  absent, missing = absent_values(), object()
  diff = sorted(k for k in (set(stored) | set(new)) - may_change
                if stored.get(k, absent.get(k, missing)) != new.get(k, absent.get(k, missing)))
  if diff:
    details = ", ".join(f"{k} (stored {stored.get(k, '<absent>')!r}, "
                        f"new {new.get(k, '<absent>')!r})" for k in diff)
    raise runs.RunDirError(
        f"cannot resume the run in {run_dir}: its config differs in {details}; only "
        f"{sorted(may_change)} may change on resume: drop the other flags (the stored "
        "values are used) or choose another --run_dir")
  return {**stored, **new}


def distinguishing_keys() -> tuple[str, ...]:
  """The config keys in which two runs of one method are different settings (analysis
  never pools them): the fields marked ``distinguishes``, TrainConfig's first."""
  return tuple(name for name, f in all_fields().items() if f.metadata.get("distinguishes"))


def validate(cfg: TrainConfig) -> None:
  """Raise :class:`ConfigError` with a one-line explanation of the first bad value."""
  def need(ok, message):
    if not ok:
      raise ConfigError(message)

  need(cfg.method in estimators.METHODS,
       f"unknown --method {cfg.method!r}; choose one of {', '.join(estimators.METHODS)}")
  need(cfg.cell in cells.CELLS,
       f"unknown --cell {cfg.cell!r}; choose one of {', '.join(cells.CELLS)}")
  spec = estimators.METHODS[cfg.method]
  for owner, cls in ((cfg.method, spec), (cfg.cell, cells.CELLS[cfg.cell])):
    problem = hyperparameters.check(owner, cls, cfg)
    need(problem is None, problem)
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
