"""Train on the copy task (string memorisation) with curriculum, online or with TBPTT.

    python train_copy.py --preset=quick                    # OK, small RHN, a few minutes
    python train_copy.py --method=kf --preset=quick
    python train_copy.py --method=tbptt --truncation=100
    python train_copy.py --preset=paper --seed=0,1,2,3,4   # n 128, B 16, r 16, 2M steps
    python train_copy.py --run_dir=runs/copy/x --resume    # continue a killed run

Each run writes config.json, metrics.csv (step, chars, level, ema_bits, loss_bits,
steps_per_sec, wall_time), TensorBoard summaries and checkpoints to its run directory,
and at the end results.json (level, max_level, ema_bits, steps, chars, wall_time,
steps_per_sec).
"""

from __future__ import annotations

from absl import app
from absl import flags

from ok_tf import config as config_lib
from ok_tf import experiment
from ok_tf import runs
from ok_tf.tasks import copy as copy_task

config_lib.define_flags("copy")
flags.adopt_module_key_flags(config_lib)   # --help lists them


def results(run: runs.Run) -> dict:
  """results.json: the last and highest curriculum level, the loss EMA, steps and time."""
  rows = run.metrics
  last, wall = rows[-1], float(rows[-1]["wall_time"])
  return {
      "level": last["level"], "max_level": max(int(r["level"]) for r in rows),
      "ema_bits": last["ema_bits"], "steps": last["step"], "chars": last["chars"],
      "wall_time": wall, "steps_per_sec": last["step"] / wall if wall > 0 else None,
  }


def run_one(cfg: config_lib.CopyConfig, resume: bool) -> runs.Run:
  task = copy_task.CopyTask(batch_size=cfg.batch_size, max_length=cfg.max_length)
  return experiment.train(cfg, task, copy_task.VOCAB_SIZE, resume=resume, summary=results)


def main(argv):
  del argv
  experiment.main("train_copy.py", "copy", run_one)


if __name__ == "__main__":
  app.run(main)
