"""Train a character-level language model on Penn Treebank, online or with TBPTT.

    python train_ptb.py --preset=quick --data_dir=DIR         # or OK_TF_DATA=DIR
    python train_ptb.py --preset=cpu --method=kf
    python train_ptb.py --preset=paper --seed=0,1,2,3,4      # n 256, B 32, r 8, 1M steps
    python train_ptb.py --run_dir=runs/ptb/x --resume         # continue a killed run

Validation bits per character on the whole validation text every --eval_every steps
(eval.csv; the best one is kept as a checkpoint); at the end the best checkpoint is
evaluated on the test text and results.json holds best_valid_bpc, best_step, test_bpc,
final_valid_bpc, wall_time, steps_per_sec and chars.
"""

from __future__ import annotations

import dataclasses
import math

from absl import app
from absl import logging

from ok_tf import config as config_lib
from ok_tf import evaluation
from ok_tf import experiment
from ok_tf import runs
from ok_tf.data import ptb
from ok_tf.tasks import ptb as ptb_task

config_lib.define_flags("ptb")


class ValidationHook:
  """Evaluates validation BPC every ``eval_every`` steps and keeps the best checkpoint."""

  columns = ("valid_bpc",)  # metrics.csv carries it on the evaluation rows only

  def __init__(self, cfg: config_lib.PTBConfig, data: ptb.PtbData):
    self.cfg = cfg
    self.data = data
    self.best = math.inf
    self.best_step = None
    self.last = None
    self.valid = None

  def on_start(self, step, trainer, run):
    self.valid = evaluation.Evaluator(trainer.model, self.data.valid, self.cfg.eval_streams)
    for row in runs.read_csv(run.path / runs.EVAL_FILE) if step else []:
      self.last = (row["step"], row["valid_bpc"])
      if row["valid_bpc"] < self.best:
        self.best, self.best_step = row["valid_bpc"], row["step"]

  def __call__(self, step, trainer, run):
    if step % self.cfg.eval_every and step != self.cfg.steps:
      return {}
    bpc = self.valid.bpc()
    self.last = (step, bpc)
    run.log_eval({"step": step, "chars": step * self.cfg.batch_size, "valid_bpc": bpc})
    run.scalars(step, {"valid_bpc": bpc}, prefix="eval")
    if bpc < self.best:
      self.best, self.best_step = bpc, step
      run.save_best(step)
    logging.info("step %d: validation %.4f bits per character (best %.4f at step %s)",
                 step, bpc, self.best, self.best_step)
    return {"valid_bpc": bpc}


def run_one(cfg: config_lib.PTBConfig, resume: bool) -> dict:
  data = ptb.load_ptb(ptb.resolve_data_dir(cfg.data_dir or None), cfg.tokenization)
  task = ptb_task.PtbStreams(data.train, cfg.batch_size, cfg.reset_every, vocab_size=data.vocab_size)
  hook = ValidationHook(cfg, data)
  run, trainer, model = experiment.train(cfg, task, data.vocab_size, resume=resume,
                                         after_chunk=hook, on_start=hook.on_start)
  if not experiment.finished(trainer, cfg):
    run.close()
    return {}
  metrics = runs.read_csv(run.path / runs.METRICS_FILE)
  final_step, final_bpc = hook.last
  run.restore_best()
  test_bpc = evaluation.Evaluator(model, data.test, cfg.eval_streams).bpc()
  wall = float(metrics[-1]["wall_time"])
  results = {
      "best_valid_bpc": hook.best, "best_step": hook.best_step, "test_bpc": test_bpc,
      "final_valid_bpc": final_bpc, "final_step": final_step,
      "chars": final_step * cfg.batch_size, "wall_time": wall,
      "steps_per_sec": final_step / wall if wall > 0 else None,
      "tokenization": cfg.tokenization, "method": runs.method_label(dataclasses.asdict(cfg)),
  }
  run.write_results(results)
  logging.info("finished %s: best validation %.4f (step %s), test %.4f bits per character",
               run.path, hook.best, hook.best_step, test_bpc)
  run.close()
  return results


def main(argv):
  del argv
  # run_one reads (and checksums) the data before it creates anything.
  experiment.main("train_ptb.py", "ptb", run_one,
                  errors=(ptb.PtbDataMissingError, ptb.PtbChecksumError))


if __name__ == "__main__":
  app.run(main)
