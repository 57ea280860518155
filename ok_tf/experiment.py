"""A training run from configuration to results, for every task (``python -m ok_tf.train``,
``train_copy.py``, ``train_ptb.py``).

config → the task's setup (its registry entry's ``build``: task, validation, vocabulary,
results) → model, estimator, trainer → run directory (config, task, metrics,
TensorBoard, checkpoints) → chunks of compiled steps with a progress line, an optional
validation hook, periodic checkpoints and exact resume from the last checkpoint →
results.json from the task's summary → the run directory closed (:func:`run_config`,
:func:`train`, which owns that lifecycle).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional

import keras
import tensorflow as tf
from absl import logging

from ok_tf import cells
from ok_tf import config as config_lib
from ok_tf import diagnostics
from ok_tf import distributed
from ok_tf import estimators
from ok_tf import lock as lock_lib
from ok_tf import models
from ok_tf import multi_worker
from ok_tf import preemption
from ok_tf import progress as progress_lib
from ok_tf import provenance
from ok_tf import python_values
from ok_tf import runs
from ok_tf import tasks
from ok_tf import training
from ok_tf.tasks import base as tasks_base

# A log row whose mean training loss exceeds DIVERGED_FACTOR × the task's baseline (for a
# symbol task log2(V) bits, the loss of guessing uniformly; for a series, the variance)
# counts as diverged; DIVERGED_ROWS such rows in a row stop the run (no checkpoint is
# written from a diverged row, so the last one is kept).
DIVERGED_FACTOR = 2.0
DIVERGED_ROWS = 3


class DivergedError(RuntimeError):
  """The training loss stayed far above the task's baseline for several log rows."""


def diverged(loss: float | None, baseline: float) -> bool:
  """Whether a log row's mean loss counts as diverged (see DIVERGED_FACTOR); a row
  without a loss (no step of it had a weight) does not, and with a baseline of 0 (a task
  whose targets a constant predicts exactly) only a non-finite loss does."""
  if loss is None:
    return False
  if not math.isfinite(loss):
    return True
  return baseline > 0 and loss > DIVERGED_FACTOR * baseline


def setup(cfg: config_lib.TrainConfig) -> None:
  """Seeds and determinism for a run (call before building anything)."""
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(cfg.seed)


def build_model(cfg: config_lib.TrainConfig, task,
                strategy: Optional[tf.distribute.Strategy] = None) -> models.RecurrentModel:
  """The run's model for ``task``'s input and output specs."""
  with distributed.scope(strategy):
    return models.RecurrentModel(cfg.cell, cfg.units, inputs=task.input_spec,
                                 outputs=task.output_spec, dtype=cfg.dtype,
                                 cell_args=cells.hyperparameters(cfg.cell, cfg))


def build_trainer(cfg: config_lib.TrainConfig, model, task,
                  strategy: Optional[tf.distribute.Strategy] = None):
  """The online trainer with the configured estimator, or the TBPTT trainer, under
  ``strategy`` (None: the default strategy, one device)."""
  with distributed.scope(strategy):
    optimizer = training.make_optimizer(cfg.lr, cfg.adam_epsilon)
  kwargs = dict(clip_norm=cfg.clip or None, seed=cfg.seed, strategy=strategy,
                recurrent_grad_scale=training.grad_scale_factor(cfg.grad_scale, cfg.batch_size))
  if estimators.method(cfg.method).takes_truncation:
    return training.TBPTTTrainer(model, task, optimizer, cfg.batch_size, cfg.truncation,
                                 **kwargs)
  shadow = diagnostics.Shadow(model) if cfg.shadow_exact else None
  estimator = estimators.get(cfg.method, model.cell, rank=cfg.rank,
                             **estimators.hyperparameters(cfg.method, cfg))
  return training.OnlineTrainer(model, estimator, task, optimizer, cfg.batch_size,
                                shadow=shadow, **kwargs)


def run_config(cfg: config_lib.TrainConfig, resume: bool = False) -> runs.Run:
  """One run of ``cfg``: its task's setup (the registry entry's ``build``), then
  :func:`train`. The errors of the entry's ``build`` that mean bad input propagate."""
  setup = tasks.get(cfg.task).build(cfg, resume)
  cfg = setup.config if setup.config is not None else cfg
  task = setup.task
  summary = setup.results or (lambda run: tasks_base.default_results(run, task))
  return train(cfg, task, resume=resume, validation=setup.validation, summary=summary,
               vocabulary=setup.vocabulary)


def train(cfg: config_lib.TrainConfig, task, resume: bool = False,
          validation=None, summary: Optional[Callable[[runs.Run], dict]] = None,
          vocabulary=None) -> runs.Run:
  """One run from its start (or last checkpoint) to ``cfg.steps``; returns it, read.

  Opens the run directory ``cfg.run_dir`` (recording the config and the task's
  ``describe()``), trains in chunks of ``log_every`` steps (a metrics row and a progress
  line each, a checkpoint every ``checkpoint_every`` steps, at the end and when
  ``--max_minutes`` runs out), writes results.json (from ``summary``) and model.keras once
  the run reached ``cfg.steps``, and closes the directory whatever happens.

  Args:
    cfg: the run's configuration.
    task: a task (the protocol of :mod:`ok_tf.tasks.base`); its specs shape the model.
    resume: continue the run in ``cfg.run_dir`` from its last checkpoint.
    validation: an evaluation hook such as :class:`ok_tf.validation.Validation`: its
      ``trackables()`` join the checkpoint, ``start(step, trainer, run)`` is called once
      the run is restored, and ``validation(step, trainer, run) -> dict`` after every chunk,
      before the metrics row is written and the checkpoint saved; the returned values join
      the row, and ``columns`` names those it returns on some rows only.
    summary: ``summary(run) -> dict``: the results of the finished run (a
      :class:`ok_tf.runs.Run`), written to results.json.
    vocabulary: the symbols of a text task (an :class:`ok_tf.data.vocabulary.Vocabulary`),
      recorded in vocab.json before anything is restored (a resumed run must have the
      same; :class:`ok_tf.runs.RunDirError` otherwise).

  Raises:
    DivergedError: the mean training loss of ``DIVERGED_ROWS`` consecutive log rows
      exceeded ``DIVERGED_FACTOR × task.baseline``; the run directory keeps the last
      checkpoint written before (no checkpoint is saved from such a row).
    ok_tf.preemption.Preempted: SIGTERM or SIGINT arrived (on any worker); the run
      stopped after the chunk it was in, with a checkpoint there.
    ok_tf.lock.LockedError: another process holds the run directory.
  """
  with preemption.Watch() as watch:   # from the start: a signal stops after the first chunk
    return _train(cfg, task, resume, validation, summary, vocabulary, watch)


def _train(cfg, task, resume, validation, summary, vocabulary,
           watch: preemption.Watch):
  """:func:`train` under the signal watch ``watch``."""
  setup(cfg)
  strategy = distributed.make_strategy(cfg)
  chief = multi_worker.is_chief(strategy)
  several = strategy is not None and multi_worker.is_multi_worker(strategy)
  if chief:
    held = lock_lib.hold(cfg.run_dir)       # one writer per run directory, first of all
  else:
    run, held = multi_worker.open_worker_dir(cfg.run_dir, strategy, resume)
  try:
    model = build_model(cfg, task, strategy)
    trainer = build_trainer(cfg, model, task, strategy)
    extra = validation.trackables() if validation is not None else {}
    if chief:
      run = runs.RunDir.open(cfg.run_dir, config_lib.recorded(cfg), resume,
                             merge=config_lib.merge_resumed)
    try:
      if chief:
        run.write_task(task.describe())
      if vocabulary is not None:
        run.write_vocabulary(vocabulary)
      run.checkpoint(**trainer.trackables(), **extra)
      run.expect_metrics(getattr(validation, "columns", ()))
      start, wall_offset = 0, 0.0
      if run.resumed:
        start = run.restore_readable(allow_missing=tuple(extra)) or 0
      if several and resume:   # every worker calls it (a collective)
        multi_worker.agree(strategy, start, cfg.run_dir)
      if run.resumed:
        run.truncate_after(start)
        rows = runs.Run(run.path).metrics if start and chief else []
        wall_offset = float(rows[-1]["wall_time"]) if rows else 0.0
        logging.info("resuming %s from step %d", run.path, start)
      if chief:
        _record_provenance(run, start, strategy)
      if validation is not None:
        validation.start(start, trainer, run)

      def stop_requested(out_of_time: bool):
        """(signal name or None, out of time), the same on every worker."""
        if not several:
          return watch.requested, out_of_time
        signalled, late = (multi_worker.any_worker(strategy, flag)
                           for flag in (watch.requested is not None, out_of_time))
        return (watch.requested or "another worker's signal") if signalled else None, late

      _train_chunks(cfg, trainer, run, task, start, wall_offset, validation,
                    stop_requested)
      if finished(trainer, cfg) and summary is not None and chief:
        results = summary(runs.Run(run.path))
        run.write_results(results)
        models.export_run_model(run.path)
        logging.info("finished %s: %s", run.path, " | ".join(
            f"{k} {progress_lib.format_metric(v)}" for k, v in results.items()))
    finally:
      run.close()
  finally:
    held.release()
  return runs.Run(run.path) if chief else None


def _record_provenance(run: runs.RunDir, start: int, strategy) -> None:
  """Appends this start's record to provenance.json (a resume under another package
  version warns in one line)."""
  record = provenance.record(start, strategy)
  if run.resumed:
    provenance.check_resume(run.path, record)
  provenance.append(run.path, record)


def _train_chunks(cfg, trainer, run: runs.RunDir, task, start: int,
                  wall_offset: float, validation, stop_requested=None) -> None:
  """The loop of :func:`train`: chunks of steps, rows, checkpoints, the divergence guard.

  ``stop_requested(out_of_time) -> (signal name or None, out_of_time)`` after every chunk:
  a signal (:class:`ok_tf.preemption.Watch`) stops the run with a checkpoint and
  :class:`ok_tf.preemption.Preempted`; on several workers both answers are the workers'
  combined ones.
  """
  stop_requested = stop_requested or (lambda late: (None, late))
  column, baseline = task.output_spec.loss_column, float(task.baseline)
  unit = task.output_spec.unit
  progress = progress_lib.Progress(cfg.steps, start, wall_offset, column, baseline)
  step = start
  started = time.perf_counter()
  bad_rows = 0
  while step < cfg.steps:
    n = min(cfg.log_every, cfg.steps - step)
    out = trainer.run(n)
    step += n
    row = {"step": step, "chars": step * cfg.batch_size}
    row.update({k: python_values.to_python(v) for k, v in out.items()
                if k not in (column, "weight")})
    row[column] = training.mean_loss(out[column], out["weight"])
    if validation is not None:
      row.update(validation(step, trainer, run) or {})
    row.update(progress.update(step, row))
    run.log_metrics(row)
    run.scalars(step, {k: v for k, v in row.items() if k not in ("step",) and v is not None})
    bad_rows = bad_rows + 1 if diverged(row[column], baseline) else 0
    if bad_rows:
      logging.warning("step %d: training loss %.4g (%s), above %g x the task's baseline %.3g "
                      "(%d such log rows in a row; %d stop the run)", step, row[column], unit,
                      DIVERGED_FACTOR, baseline, bad_rows, DIVERGED_ROWS)
    if bad_rows >= DIVERGED_ROWS:
      raise DivergedError(
          f"training diverged: the loss stayed above {DIVERGED_FACTOR:g} x the task's "
          f"baseline = {DIVERGED_FACTOR * baseline:.3g} ({unit}) for {bad_rows} log "
          f"rows (now {row[column]:.4g} at step {step}); the last checkpoint before "
          f"it is kept in {run.path}: lower --lr or clip the gradient (--clip)")
    out_of_time = bool(cfg.max_minutes) and time.perf_counter() - started > 60 * cfg.max_minutes
    signalled, out_of_time = stop_requested(out_of_time)
    if not bad_rows and (step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time
                         or signalled):
      run.save(step)
    if signalled and step < cfg.steps:
      raise preemption.Preempted(run.latest_step or 0, signalled, cfg.run_dir)
    if out_of_time and step < cfg.steps:
      logging.warning("stopping at step %d of %d after --max_minutes=%g; continue with "
                      "--run_dir=%s --resume", step, cfg.steps, cfg.max_minutes, run.path)
      break


def finished(trainer, cfg: config_lib.TrainConfig) -> bool:
  """Whether the run reached ``cfg.steps`` (not stopped early by ``--max_minutes``)."""
  return int(trainer.step.numpy()) >= cfg.steps


def main(script: str, task: str | None = None) -> None:
  """Entry point of a training script: flags → configs → :func:`run_config` each.

  ``task``: the script's task (``train_copy.py``: copy), or None for ``--task``.
  A bad flag, a run directory that cannot be used, a diverged run or bad input of the
  task (its entry's ``errors``) stops the script with one line naming the problem (no
  traceback).
  """
  errors = tuple(e for name in tasks.names() for e in tasks.get(name).errors)
  try:
    configs, resume = config_lib.from_flags(task)
    distributed.configure_devices(configs[0])
    if configs[0].strategy == "multi_worker":
      multi_worker.strategy()   # before any other TensorFlow work
    run_all(configs, resume, run_config)
  except preemption.Preempted as e:
    print(f"{script}: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)
  except (config_lib.ConfigError, runs.RunDirError, training.NonFiniteLossError,
          DivergedError, GridDivergedError, lock_lib.LockedError) + errors as e:
    sys.exit(f"{script}: {e}")


class GridDivergedError(RuntimeError):
  """Runs of a learning-rate / seed grid diverged (the others were run to the end)."""


def run_all(configs, resume: bool, run_one) -> None:
  """``run_one(cfg, resume)`` for each config. One run alone stops at its first error. In
  a grid a diverged run (a non-finite or runaway loss: a possible outcome of a large
  learning rate) is logged and the grid goes on; :class:`GridDivergedError` names those
  runs at the end."""
  failed = []
  for cfg in configs:
    try:
      run_one(cfg, resume)
    except (training.NonFiniteLossError, DivergedError) as e:
      if len(configs) == 1:
        raise
      logging.error("%s diverged, the grid goes on: %s", cfg.run_dir, e)
      failed.append(f"{cfg.run_dir} ({e})")
  if failed:
    raise GridDivergedError(f"{len(failed)} of {len(configs)} runs diverged, the others "
                            f"finished: {'; '.join(failed)}")
