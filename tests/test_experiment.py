"""experiment.train owns a run's lifecycle; Validation's state survives a resume (in process, tiny)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import config as config_lib
from ok_tf import experiment
from ok_tf import runs
from ok_tf import validation as validation_lib
from ok_tf.tasks import copy as copy_task
from ok_tf.tasks import text as text_task

import toolkit

VOCAB = 10
# Training text: one pattern of period 7, learnt quickly; validation text: uniform noise, so
# the validation BPC is lowest early and rises as the model grows sure of the pattern.
TRAIN = np.tile(np.array([0, 3, 1, 4, 1, 5, 9], np.int32), 300)
VALID = np.random.default_rng(0).integers(0, VOCAB, 400).astype(np.int32)


def ptb_config(run_dir, steps, **kw):
  return config_lib.PTBConfig(units=8, rank=2, batch_size=4, lr=0.03, steps=steps,
                              log_every=50, checkpoint_every=50, eval_every=50,
                              eval_streams=4, reset_every=10, run_dir=str(run_dir), **kw)


def train_ptb(run_dir, steps, resume=False, validation_cls=validation_lib.Validation):
  cfg = ptb_config(run_dir, steps)
  task = text_task.TextStreams(TRAIN, cfg.batch_size, cfg.reset_every, VOCAB)
  validation = validation_cls(VALID, cfg.eval_every, cfg.steps, cfg.batch_size,
                              cfg.eval_streams)

  def results(run):
    (best_step, best), (final_step, final) = validation.best, validation.last
    return {"best_valid_bpc": best, "best_step": best_step, "final_valid_bpc": final,
            "final_step": final_step, "steps": len(run.metrics)}

  return experiment.train(cfg, task, resume=resume, validation=validation,
                          summary=results)


class UncheckpointedValidation(validation_lib.Validation):
  """Validation as before its state was checkpointed (a run made by an older version)."""

  def trackables(self):
    return {}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  return train_ptb(tmp_path_factory.mktemp("ptb") / "whole", 400)


def test_train_writes_results_and_returns_the_run(uninterrupted):
  run = uninterrupted
  assert isinstance(run, runs.Run) and run.finished
  assert run.results == json.loads((run.path / runs.RESULTS_FILE).read_text())
  assert run.results["final_step"] == 400 and run.results["steps"] == 8
  assert [r["step"] for r in run.eval] == [50, 100, 150, 200, 250, 300, 350, 400]
  best = min(run.eval, key=lambda r: r["valid_bpc"])
  assert (run.results["best_step"], run.results["best_valid_bpc"]) == (
      best["step"], best["valid_bpc"])
  assert run.best_step == best["step"] and run.latest_step == 400
  # the test below is only meaningful if the best evaluation comes before the interruption:
  # uniform noise against a learnt pattern, the BPC rises at every evaluation from step 50
  # (measured 4.90, 6.52, 7.95, 8.63, ...; the same with other kernels and one thread)
  assert best["step"] <= 200 and run.eval[-1]["valid_bpc"] > best["valid_bpc"]
  assert [r["valid_bpc"] for r in run.metrics] == [r["valid_bpc"] for r in run.eval]


@pytest.mark.parametrize("first_part", [validation_lib.Validation, UncheckpointedValidation])
def test_validation_state_survives_resume(uninterrupted, first_part, tmp_path):
  """Stopped at 200 steps and resumed to 400: the same results as the uninterrupted run,
  from the checkpointed state or, for a checkpoint without it, from eval.csv."""
  part = train_ptb(tmp_path / "run", 200, validation_cls=first_part)
  assert part.finished and part.results["final_step"] == 200
  (part.path / runs.RESULTS_FILE).unlink()
  saved = {name.split("/")[0] for name, _ in tf.train.list_variables(part.checkpoint("latest")[0])}
  assert ("validation" in saved) == (first_part is validation_lib.Validation)
  run = train_ptb(tmp_path / "run", 400, resume=True)
  assert run.results == uninterrupted.results
  assert run.eval == uninterrupted.eval
  strip = lambda rows: [{k: v for k, v in r.items() if k not in toolkit.TIMING_COLUMNS}
                        for r in rows]
  assert strip(run.metrics) == strip(uninterrupted.metrics)
  assert run.best_step == uninterrupted.best_step


def test_train_closes_the_run_and_writes_no_results_when_stopped_early(tmp_path):
  cfg = config_lib.CopyConfig(units=4, rank=1, batch_size=2, steps=40, log_every=10,
                              checkpoint_every=10, max_minutes=1e-6, run_dir=str(tmp_path / "r"))
  called = []
  run = experiment.train(cfg, copy_task.CopyTask(batch_size=2, max_length=8),
                         summary=lambda r: called.append(r) or {})
  assert not called and not run.finished and run.results is None
  assert [r["step"] for r in run.metrics] == [10] and run.latest_step == 10


def test_a_grid_goes_on_past_a_diverged_run_and_names_it():
  configs = [config_lib.CopyConfig(lr=lr, run_dir=f"grid/lr{lr:g}") for lr in (1e-2, 1e-3, 1e-4)]
  done = []

  def run_one(cfg, resume):
    if cfg.lr == 1e-2:
      raise experiment.DivergedError("the loss ran away at step 7")
    done.append(cfg.lr)

  with pytest.raises(experiment.GridDivergedError) as info:
    experiment.run_all(configs, False, run_one)
  assert done == [1e-3, 1e-4]
  assert str(info.value) == ("1 of 3 runs diverged, the others finished: grid/lr0.01 (the "
                             "loss ran away at step 7)")
  # one run alone stops with its own error
  with pytest.raises(experiment.DivergedError):
    experiment.run_all(configs[:1], False, run_one)
