"""Train any registered task online (or with TBPTT): ``python -m ok_tf.train --task=NAME``.

    python -m ok_tf.train --task=copy --preset=quick
    python -m ok_tf.train --task=ptb --preset=cpu --method=kf
    python -m ok_tf.train --task=text --train_file=my.txt --valid_file=my_valid.txt
    python -m ok_tf.train --task=NAME --run_dir=runs/x --resume     # continue a killed run

``--task`` chooses a task of the registry (:mod:`ok_tf.tasks`; ``--help`` lists them and
each task's own flags, marked ``[task NAME]``); ``--preset`` its named configuration, which
any flag overrides. Every run writes config.json, task.json (the task's specs and
baselines), metrics.csv (step, chars, the task's metrics, the loss in the task's unit:
``loss_bits`` or ``loss_mse``, steps_per_sec, wall_time), TensorBoard summaries and
checkpoints to its run directory, and at the end results.json and model.keras.
``train_copy.py`` and ``train_ptb.py`` are this program with their task fixed.
"""

from __future__ import annotations

from absl import app
from absl import flags

from ok_tf import config as config_lib
from ok_tf import experiment


def define_flags(task: str | None = None) -> None:
  """The flags of a training program (``task``: fixed, or None for ``--task``)."""
  config_lib.define_flags(task)
  flags.adopt_module_key_flags(config_lib)   # --help lists them


def entry(script: str, task: str | None = None):
  """``main(argv)`` of a training program for absl's ``app.run``."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a "
                           "--flag (see --help)")
    experiment.main(script, task)
  return main


if __name__ == "__main__":
  define_flags()
  app.run(entry("ok_tf.train"))
