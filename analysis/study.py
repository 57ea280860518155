"""Run a reproduction study (a fixed list of training runs) and collect its small files.

    python -m analysis.study copy_cpu ptb_cpu --workers=2      # the CPU-scale studies
    python -m analysis.study copy_cpu --dry_run                 # print the commands only
    python -m analysis.study ptb_cpu --collect_only             # copy finished runs' files
    python -m analysis.study copy_cpu --print_commands --max_minutes=230   # for a job array

Each run is one ``train_copy.py`` / ``train_ptb.py`` process in its own run directory
(``--runs_root``/<study>/<run>). Runs go to ``--workers`` processes at a time, each
limited to ``--threads`` TensorFlow threads: on a small CPU, two single-threaded runs
side by side do more steps per second in total than one run using both cores. The
study is idempotent: a finished run (results.json present) is skipped, a started one
continues from its last checkpoint (``--resume``), so a killed study is restarted with
the same command. At the end each run's config.json, metrics.csv, eval.csv and
results.json are copied to ``--results``/<task>/<run>/ (the learning-rate studies'
to ``--results``/<task>/lr_grid/<run>/) and ``runs.md`` there lists every run with its
command, machine and wall time.

Studies: ``copy_cpu`` and ``ptb_cpu`` (the CPU-scale reproduction: every method at one
learning rate), ``copy_cpu_lr`` and ``ptb_cpu_lr`` (other learning rates of the paper's
grid, to check that the comparison does not hinge on the learning rate) and
``ptb_cpu_seeds`` (second seeds for the two closest PTB methods) and
``copy_cpu_tbptt_lr2`` (TBPTT beyond the grid on the copy task).

On a cluster, ``--print_commands`` prints one self-contained shell command per pending
run (not finished), with its absolute ``--run_dir``, ``--resume`` (which starts a run not
yet begun) and ``--max_minutes``: one line per task of a job array on any scheduler
(docs/cluster.md); a command run again after a preemption or the time limit continues
the run. ``--collect_only`` then collects the finished runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

from analysis import tables
from ok_tf import estimators
from ok_tf import runs as runs_lib

# The repository: the training scripts' folder, the working directory of their runs.
ROOT = pathlib.Path(__file__).resolve().parent.parent
# How runs.md says it was made (the form before ``python -m`` is still read).
MADE_WITH = re.compile(r"(?:analysis/study\.py|-m analysis\.study) ([^`]*)`")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the studies' names are arguments."""
  fv = flag_values
  flags.DEFINE_integer("workers", 2, "Runs at a time.", flag_values=fv)
  flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads per run.", flag_values=fv)
  flags.DEFINE_string("runs_root", "runs/study", "Where the run directories go.",
                      flag_values=fv)
  flags.DEFINE_string("results", "results", "Where the small files are collected.",
                      flag_values=fv)
  flags.DEFINE_boolean("dry_run", False, "Print the commands and exit.", flag_values=fv)
  flags.DEFINE_boolean("collect_only", False, "Only collect finished runs' files.",
                       flag_values=fv)
  flags.DEFINE_list("only", None, "Run only these run names of the studies.", flag_values=fv)
  flags.DEFINE_boolean("print_commands", False, "Print one self-contained shell command per "
                       "pending run (with --run_dir, --resume, --max_minutes) and exit.",
                       flag_values=fv)
  flags.DEFINE_float("max_minutes", 0.0, "--print_commands: each run stops with a checkpoint "
                     "after this many minutes (0: no limit); a job's time limit minus a margin.",
                     flag_values=fv)
  flags.DEFINE_list("extra", [], "Extra flags passed to every run, e.g. --steps=2000 "
                    "(for trying the machinery at a small size).", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study."""
  study: str
  task: str          # "copy" or "ptb" (also the results subfolder)
  name: str
  args: tuple        # flags after the preset
  cost: float        # rough relative cost, longest first

  @property
  def folder(self) -> str:
    """Its folder under results/: the paper's tasks' own, ``tasks`` for the others (whose
    run names start with the task)."""
    return self.task if self.task in ("copy", "ptb") else "tasks"

  @property
  def program(self) -> list[str]:
    """The training program after ``python``: the paper's tasks' scripts, else
    ``-m ok_tf.train --task=TASK``."""
    if self.task in ("copy", "ptb"):
      return [f"train_{self.task}.py"]
    return ["-m", "ok_tf.train", f"--task={self.task}"]


def _copy_cpu() -> list[Run]:
  runs = []
  for seed in (0, 1):
    runs.append(Run("copy_cpu", "copy", f"ok_r16_seed{seed}", ("--method=ok", "--rank=16",
                                                             f"--seed={seed}"), 1.0))
    runs.append(Run("copy_cpu", "copy", f"ok_r8_seed{seed}", ("--method=ok", "--rank=8",
                                                            f"--seed={seed}"), 0.6))
    for t in (25, 100):
      runs.append(Run("copy_cpu", "copy", f"tbptt_T{t}_seed{seed}",
                      ("--method=tbptt", f"--truncation={t}", f"--seed={seed}"), 0.15))
  runs.append(Run("copy_cpu", "copy", "kf_seed0", ("--method=kf", "--seed=0"), 0.3))
  runs.append(Run("copy_cpu", "copy", "kf_avg_r8_seed0", ("--method=kf_avg", "--rank=8",
                                                          "--seed=0"), 0.5))
  runs.append(Run("copy_cpu", "copy", "uoro_seed0", ("--method=uoro", "--seed=0"), 0.3))
  return runs


def _ptb_cpu() -> list[Run]:
  return [
      Run("ptb_cpu", "ptb", "ok_r8_seed0", ("--method=ok", "--rank=8", "--seed=0"), 2.0),
      Run("ptb_cpu", "ptb", "kf_seed0", ("--method=kf", "--seed=0"), 0.8),
      Run("ptb_cpu", "ptb", "uoro_seed0", ("--method=uoro", "--seed=0"), 1.0),
      Run("ptb_cpu", "ptb", "tbptt_T25_seed0", ("--method=tbptt", "--truncation=25",
                                                "--seed=0"), 0.4),
      Run("ptb_cpu", "ptb", "tbptt_T100_seed0", ("--method=tbptt", "--truncation=100",
                                                 "--seed=0"), 0.4),
  ]


def _lr_variants(study, task, runs, exponents, names=None):
  """The runs (all, or those in ``names``) again at lr 10^e for each exponent e."""
  out = []
  for e in exponents:
    for r in runs:
      if names and not any(r.name.startswith(n) for n in names):
        continue
      stem, seed = r.name.rsplit("_seed", 1)
      out.append(Run(study, task, f"{stem}_lr{e:g}_seed{seed}", r.args + (f"--lr=10^{e:g}",),
                     r.cost))
  return out


def _copy_cpu_lr() -> list[Run]:
  """The paper's other learning rates for the cheap methods (the study used 10^-2.5)."""
  return _lr_variants("copy_cpu_lr", "copy", _copy_cpu(), (-3, -3.5),
                      names=("tbptt", "kf_seed", "uoro"))


def _ptb_cpu_lr() -> list[Run]:
  """Learning rates around the study's 10^-3: every method at 10^-2.5, the cheap ones
  also at 10^-3.5."""
  runs = _ptb_cpu()
  return (_lr_variants("ptb_cpu_lr", "ptb", runs, (-2.5,)) +
          _lr_variants("ptb_cpu_lr", "ptb", runs, (-3.5,), names=("tbptt", "kf", "uoro")))


def _ptb_cpu_seeds() -> list[Run]:
  """A second seed for OK and for TBPTT(25) at its best learning rate of the grid, and
  TBPTT(25) at 10^-2, beyond the grid (the two were within 0.05 BPC)."""
  tbptt = ("--method=tbptt", "--truncation=25")
  return [
      Run("ptb_cpu_seeds", "ptb", "ok_r8_seed1", ("--method=ok", "--rank=8", "--seed=1"), 2.0),
      Run("ptb_cpu_seeds", "ptb", "lr_grid/tbptt_T25_lr-2.5_seed1",
          tbptt + ("--seed=1", "--lr=10^-2.5"), 0.4),
      Run("ptb_cpu_seeds", "ptb", "lr_grid/tbptt_T25_lr-2_seed0",
          tbptt + ("--seed=0", "--lr=10^-2"), 0.4),
  ]


def _copy_cpu_tbptt_lr2() -> list[Run]:
  """TBPTT one step beyond the grid's largest learning rate (10^-2), where the grid's
  best (10^-2.5) is its edge."""
  return _lr_variants("copy_cpu_tbptt_lr2", "copy", _copy_cpu(), (-2,), names=("tbptt",))


# The tasks study (results/tasks): every method on additive dependencies and Mackey-Glass,
# tanh n 32, B 16 (the tasks' cpu preset), at three rates: a short check (4000 steps,
# tasks_cpu_lr), then 20k steps each with the gradient's cosine to exact RTRL (tasks_cpu;
# analysis.task_table --best_lr picks each method's best rate).
TASKS_STUDIED = ("additive", "mackey_glass")
TASK_METHODS = {
    "ok_r1": ("--method=ok", "--rank=1"), "ok_r2": ("--method=ok", "--rank=2"),
    "ok_r8": ("--method=ok", "--rank=8"), "kf_avg_r8": ("--method=kf_avg", "--rank=8"),
    "kf": ("--method=kf",), "uoro": ("--method=uoro",), "snap1": ("--method=snap1",),
    "rtrl": ("--method=rtrl",), "tbptt_T4": ("--method=tbptt", "--truncation=4"),
    "tbptt_T32": ("--method=tbptt", "--truncation=32")}
TASK_LRS = (-2, -2.5, -3)


def _tasks_cpu_lr() -> list[Run]:
  return [Run("tasks_cpu_lr", task, f"{task}/{name}_lr{e:g}", args + (f"--lr=10^{e:g}", "--seed=0",
                                                                       "--steps=4000"), 0.2)
          for task in TASKS_STUDIED for name, args in TASK_METHODS.items() for e in TASK_LRS]


def _tasks_cpu() -> list[Run]:
  runs = []
  for task in TASKS_STUDIED:
    for name, args in TASK_METHODS.items():
      method = estimators.method(args[0].split("=", 1)[1])   # args start with --method=
      # the shadow compares an estimator with exact RTRL: not for RTRL itself or TBPTT
      shadow = () if method.exact or method.takes_truncation else ("--shadow_exact",)
      for e in TASK_LRS:
        runs.append(Run("tasks_cpu", task, f"{task}/{name}_lr{e:g}_seed0",
                        args + (f"--lr=10^{e:g}", "--seed=0") + shadow, 1.0))
  return runs


# Where a study's runs go under results/<task>/ (the main studies at the top).
SUBFOLDER = {"copy_cpu_lr": "lr_grid", "ptb_cpu_lr": "lr_grid", "copy_cpu_tbptt_lr2": "lr_grid",
             "tasks_cpu_lr": "lr_check"}

STUDIES = {"copy_cpu": _copy_cpu, "ptb_cpu": _ptb_cpu, "copy_cpu_lr": _copy_cpu_lr,
           "ptb_cpu_lr": _ptb_cpu_lr, "ptb_cpu_seeds": _ptb_cpu_seeds,
           "copy_cpu_tbptt_lr2": _copy_cpu_tbptt_lr2, "tasks_cpu_lr": _tasks_cpu_lr,
           "tasks_cpu": _tasks_cpu}


def command(run: Run, run_dir: pathlib.Path, resume: bool, extra=()) -> list[str]:
  program = run.program
  if not program[0].startswith("-"):
    program = [str(ROOT / program[0]), *program[1:]]
  cmd = [sys.executable, *program, "--preset=cpu", *run.args,
         f"--run_dir={run_dir}", *extra]
  return cmd + (["--resume"] if resume else [])


def shown_command(run: Run) -> str:
  """The command as a user types it (without the run directory)."""
  return " ".join(["python", *run.program, "--preset=cpu", *run.args])


def pending_command(run: Run, run_dir: pathlib.Path, threads: int, max_minutes: float,
                    extra=()) -> str:
  """A shell command that starts or continues ``run`` from any folder: cd to the
  repository, the study's thread limit, the script with --run_dir, --resume and
  --max_minutes."""
  args = ["python", *run.program, "--preset=cpu", *run.args, f"--run_dir={run_dir}", *extra,
          "--resume", f"--max_minutes={max_minutes:g}"]
  return (f"cd {shlex.quote(str(ROOT))} && TF_NUM_INTRAOP_THREADS={threads} "
          f"TF_NUM_INTEROP_THREADS=1 " + " ".join(shlex.quote(a) for a in args))


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, CPU only"


def run_one(run: Run, run_dir: pathlib.Path, threads: int, extra) -> tuple[Run, int, float]:
  resume = runs_lib.is_run(run_dir)
  if resume and runs_lib.Run(run_dir).finished:
    logging.info("%s/%s: finished earlier, skipped", run.study, run.name)
    return run, 0, 0.0
  cmd = command(run, run_dir, resume, extra)
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  run_dir.mkdir(parents=True, exist_ok=True)
  logging.info("%s/%s: %s %s", run.study, run.name, "resuming" if resume else "starting",
               " ".join(cmd[1:]))
  start = time.time()
  with open(run_dir / "stdout.log", "a") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
  elapsed = time.time() - start
  logging.info("%s/%s: exit %d after %.0f s", run.study, run.name, rc, elapsed)
  return run, rc, elapsed


def collect(runs: list[Run], runs_root: pathlib.Path, results: pathlib.Path, threads: int,
            workers: int) -> None:
  """Copy finished runs' small files and write results/<task>/runs.md (``threads`` and
  ``workers``: how the runs ran, for its header)."""
  by_task: dict[str, list[str]] = {}
  for run in runs:
    src = runs_root / run.study / run.name
    if not runs_lib.is_run(src) or not runs_lib.Run(src).finished:
      continue
    src = runs_lib.Run(src)
    dst = results / run.folder / SUBFOLDER.get(run.study, "") / run.name
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.log_files():
      shutil.copy2(path, dst / path.name)
    res = src.results
    by_task.setdefault(run.folder, []).append(tables.line([
        dst.relative_to(results / run.folder), f"`{shown_command(run)}`",
        f"{res.get('wall_time', 0):.0f} s", f"{res.get('steps_per_sec') or 0:.1f}"]))
  for task, rows in by_task.items():
    path = results / task / "runs.md"
    studies = {r.study for r in runs if r.folder == task}
    if path.exists():   # keep the studies of the rows kept from the existing table
      made = MADE_WITH.search(path.read_text())
      studies |= set(made.group(1).split()) if made else set()
    rows = _merge_rows(path, rows)
    each = "single-threaded" if threads == 1 else f"{threads} TensorFlow threads"
    head = ["# Runs", "", f"Machine: {machine()}; each run {each} "
            f"(TF_NUM_INTRAOP_THREADS={threads}), {workers} at "
            f"a time. Made with `python -m analysis.study {' '.join(sorted(studies))}`.", "",
            tables.markdown([], ["run", "command", "training wall time", "steps/s"], "llrr")]
    path.write_text("\n".join(head + rows) + "\n")
    logging.info("collected %d runs into %s", len(rows), results / task)


def _merge_rows(path: pathlib.Path, rows: list[str]) -> list[str]:
  """The table rows of an existing runs.md with ``rows`` replacing those of the same run.

  So a study restricted with --only (or one study of several) updates its own rows and
  keeps the other runs' rows, in their order; new runs are appended.
  """
  name = lambda row: row.split("|")[1].strip()
  new = {name(r): r for r in rows}
  old = []
  if path.exists():
    old = [line for line in path.read_text().splitlines()
           if line.startswith("| ") and not line.startswith("| run |")]
  merged = [new.pop(name(r), r) for r in old]
  return merged + [r for r in rows if name(r) in new]


def run(flag_values: flags.FlagValues, names) -> None:
  """Runs (and collects) the studies ``names`` as the flags say."""
  unknown = [n for n in names if n not in STUDIES]
  if not names or unknown:
    sys.exit(f"study.py: name one or more studies of {', '.join(STUDIES)}"
             + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
  fv = flag_values
  runs = [r for n in names for r in STUDIES[n]()]
  if fv.only:
    missing = set(fv.only) - {r.name for r in runs}
    if missing:
      sys.exit(f"study.py: --only names unknown runs: {', '.join(sorted(missing))}")
    runs = [r for r in runs if r.name in fv.only]
  runs_root = (ROOT / fv.runs_root) if not os.path.isabs(fv.runs_root) else pathlib.Path(
      fv.runs_root)
  results = (ROOT / fv.results) if not os.path.isabs(fv.results) else pathlib.Path(fv.results)
  if fv.print_commands:
    for r in runs:
      run_dir = runs_root / r.study / r.name
      if not (runs_lib.is_run(run_dir) and runs_lib.Run(run_dir).finished):
        print(pending_command(r, run_dir, fv.threads, fv.max_minutes, fv.extra))
    return
  if fv.dry_run:
    for r in runs:
      print(shown_command(r), f"--run_dir={runs_root / r.study / r.name}", *fv.extra)
    return
  if not fv.collect_only:
    order = sorted(runs, key=lambda r: -r.cost)
    failed = []
    with concurrent.futures.ThreadPoolExecutor(fv.workers) as pool:
      futures = [pool.submit(run_one, r, runs_root / r.study / r.name, fv.threads, fv.extra)
                 for r in order]
      for f in concurrent.futures.as_completed(futures):
        run, rc, _ = f.result()
        if rc:
          failed.append(f"{run.study}/{run.name} (exit {rc}, see "
                        f"{runs_root / run.study / run.name / 'stdout.log'})")
    if failed:
      logging.error("failed runs: %s", "; ".join(failed))
  collect(runs, runs_root, results, fv.threads, fv.workers)


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
