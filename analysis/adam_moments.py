"""What a run's Adam state says about its gradient clip and Adam's ε, at its checkpoints.

    python -m analysis.adam_moments RUN_DIR... [--which=all|latest|best|STEP] [--csv FILE]

Adam keeps, for every entry of a weight, the running means m ← β1·m + (1 − β1)·u and
v ← β2·v + (1 − β2)·u² of the gradient u it was handed (β2 = 0.999: about the last 1000
updates), and moves the weight by α_t·m / (√v + ε), the bias corrections folded into the
step size α_t = lr·√(1 − β2^t) / (1 − β1^t) (Keras 3, as TensorFlow 1). For the recurrent
weights W, u is the gradient g after the run's scale s
(:func:`ok_tf.training.grad_scale_factor`: 1 for ``--grad_scale=mean``, 1/B for
``published``) and the clip c: u = clip(s·g, c). g is the batch-mean gradient of one
step's loss for the online methods, and of a window's summed loss (T steps) for TBPTT, so
TBPTT's norms are on a scale about T times larger. A checkpoint tells, over the last
thousand or so updates,

* ``rms_clipped_norm``: √(Σ v̂) / s with v̂ = v / (1 − β2^t), the root-mean-square norm of
  the clipped gradient, in the units of g, so that runs of either scale compare;
* ``clip_g``: the clip threshold in the same units, c / s (the config's ``clip`` is c).
  ``rms_clipped_norm`` can never exceed it; close to it, the clip acts on most updates;
  far below it, seldom;
* ``eps_effect``: how much ε shrinks Adam's step on W, 1 − ‖m/(√v + ε)‖ / ‖m/√v‖, over
  the entries with v > 0; and ``eps_share_p999``, the 99.9th percentile over those entries
  of ε's share of the denominator, ε / (√v + ε). Near zero, ε changes nothing;
* ``zero_v``: the share of W's entries with v = 0, which Adam does not move: those that
  never received a gradient (e.g. the input weights of a symbol absent from the training
  text), or whose v decayed below float32's range long after their last one.

One row per (run, checkpoint); runs without checkpoints (e.g. the committed results,
which keep none) are named and skipped. Nothing is trained: the run's model and optimiser
are built from its config.json and restored from the checkpoint.
"""

from __future__ import annotations

import math

from absl import app
from absl import flags
from absl import logging
import numpy as np

from analysis import common
from analysis import tables
from ok_tf import config as config_lib
from ok_tf import models
from ok_tf import runs as runs_lib
from ok_tf import training

COLUMNS = ("run", "step", "grad_scale", "clip_g", "rms_clipped_norm", "eps_effect",
           "eps_share_p999", "zero_v")


def slot(optimizer, variable, name: str):
  """Adam's slot ``name`` ("momentum", "velocity") of ``variable`` (Keras names a slot
  after its variable's path)."""
  full = variable.path.replace("/", "_") + "_" + name
  matches = [v for v in optimizer.variables if v.name == full]
  if len(matches) != 1:
    raise ValueError(f"the optimizer has no single slot named {full!r}")
  return matches[0]


def moments(run: runs_lib.Run, which) -> dict:
  """The row of ``run`` at checkpoint ``which`` ("latest", "best" or a step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = dict(config_lib.absent_values(), **run.config)
  model = models.run_model(run)
  optimizer = training.make_optimizer(float(config["lr"]), float(config.get("adam_epsilon", 1e-8)))
  optimizer.build(model.recurrent_variables + model.readout_variables)
  prefix, step = run.checkpoint(which)
  status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(prefix)
  status.assert_existing_objects_matched()
  status.expect_partial()       # the estimator's, the task's and the trainer's states
  updates = int(optimizer.iterations.numpy())
  if updates == 0:
    raise ValueError(f"{run.path}: checkpoint {step} holds no Adam update")
  epsilon = float(optimizer.epsilon)

  def stacked(name):
    return np.concatenate([slot(optimizer, w, name).numpy().ravel().astype(np.float64)
                           for w in model.recurrent_variables])

  m, v = stacked("momentum"), stacked("velocity")
  live = v > 0
  root = np.sqrt(v[live])
  step_with = np.linalg.norm(m[live] / (root + epsilon))
  step_without = np.linalg.norm(m[live] / root)
  scale = training.grad_scale_factor(config["grad_scale"], int(config["batch_size"]))
  clip = float(config.get("clip") or 0.0)
  v_hat = v / (1 - float(optimizer.beta_2) ** updates)
  return {"run": str(run.path), "step": step, "grad_scale": config["grad_scale"],
          "clip_g": clip / scale if clip else math.inf,
          "rms_clipped_norm": float(np.sqrt(v_hat.sum())) / scale,
          "eps_effect": float(1 - step_with / step_without) if step_without > 0 else 0.0,
          "eps_share_p999": (float(np.quantile(epsilon / (root + epsilon), 0.999))
                             if live.any() else float("nan")),
          "zero_v": float(1 - live.mean())}


def adam_moments(paths, which: str = "all") -> list[dict]:
  """The rows of every run under ``paths`` that has checkpoints: each one (``all``) or
  one of them; a run without checkpoints is named in a warning and skipped."""
  rows = []
  for run in common.load_runs(paths):
    if not run.checkpoints:
      logging.warning("%s: no checkpoints, skipped", run.path)
      continue
    if which == "all":
      steps = sorted(run.checkpoints)
    else:
      steps = [int(which) if which.isdigit() else which]
    rows.extend(moments(run, step) for step in steps)
  if not rows:
    raise FileNotFoundError(f"no checkpoints in any run under {', '.join(map(str, paths))}")
  return rows


def to_markdown(rows) -> str:
  header = ["run", "step", "grad_scale", "clip c / s", "RMS ‖clip(s·g, c)‖ / s",
            "ε's effect on the step", "ε share, 99.9 %", "entries with v = 0"]
  cells = ([r["run"], r["step"], r["grad_scale"], f"{r['clip_g']:g}",
            f"{r['rms_clipped_norm']:.3g}", f"{r['eps_effect']:.2g}",
            f"{r['eps_share_p999']:.2g}", f"{r['zero_v']:.2%}"] for r in rows)
  return tables.markdown(cells, header, "lrlrrrrr")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  flags.DEFINE_string("which", "all", "The checkpoints: all, latest, best or a step.",
                      flag_values=flag_values)
  flags.DEFINE_string("csv", "", "Also write the rows to this CSV file (none if empty).",
                      flag_values=flag_values)
  flags.register_validator(
      "which", lambda w: w in ("all", "latest", "best") or w.isdigit(),
      "--which must be all, latest, best or a step", flag_values=flag_values)


def run(flag_values: flags.FlagValues, paths) -> tuple[str, list[dict]]:
  """The table of the runs under ``paths``: printed, the rows to --csv."""
  common.require_paths(paths)
  rows = adam_moments(paths, flag_values.which)
  text = to_markdown(rows)
  print(text)
  if flag_values.csv:
    tables.write_csv(flag_values.csv, rows, COLUMNS)
  return text, rows


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
