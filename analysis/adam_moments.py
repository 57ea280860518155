"""What a run's Adam state says about its gradient clip and Adam's ε, at its checkpoints.

    python -m analysis.adam_moments RUN_DIR... [--which=all|latest|best|STEP] [--csv FILE]

Adam keeps, for every entry of a weight, v ← β2·v + (1 − β2)·u², the running mean of the
square of the gradient u it was handed (β2 = 0.999: about the last 1000 updates), and
divides each update by √v̂ + ε (v̂ = v/(1 − β2^t)). For the recurrent weights W, u is the
batch-mean gradient g after the run's scale s (:func:`ok_tf.training.grad_scale_factor`:
1 for ``--grad_scale=mean``, 1/B for ``published``) and the clip c: u = clip(s·g, c). So a
checkpoint tells, over the last thousand or so updates,

* ``rms_norm``: √(Σ v̂) / s, the root-mean-square norm of the clipped gradient, in the units
  of the batch-mean gradient g, so that runs of either scale compare;
* ``clip``: the clip threshold in the same units, c / s. ``rms_norm`` can never exceed it;
  close to it, the clip acts on most updates; far below it, seldom;
* ``eps_effect``: how much ε shrinks Adam's step on W, 1 − ‖m̂/(√v̂ + ε)‖ / ‖m̂/√v̂‖
  (m̂ Adam's bias-corrected first moment, the step's direction), over the entries that
  received any gradient; and ``eps_share_p999``, the 99.9th percentile over those entries
  of ε's share of the denominator, ε / (√v̂ + ε). Near zero, ε changes nothing;
* ``dead``: the share of W's entries that never received a gradient (v̂ = 0, e.g. the
  input weights of a symbol absent from the training text); Adam does not move them.

One row per (run, checkpoint). Nothing is trained: the run's model and optimiser are built
from its config.json and restored from the checkpoint.
"""

from __future__ import annotations

import csv
import math

from absl import app
from absl import flags
import numpy as np

from analysis import common
from ok_tf import models
from ok_tf import runs as runs_lib
from ok_tf import training

COLUMNS = ("run", "step", "grad_scale", "clip", "rms_norm", "eps_effect", "eps_share_p999",
           "dead")


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
  config = run.config
  model = models.RecurrentModel(config.get("cell", "rhn"), int(config["units"]),
                                int(run.vocab_size), dtype=config.get("dtype", "float32"))
  optimizer = training.make_optimizer(float(config["lr"]),
                                      float(config.get("adam_epsilon", 1e-8)))
  optimizer.build(model.recurrent_variables + model.readout_variables)
  prefix, step = run.checkpoint(which)
  status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(prefix)
  status.assert_existing_objects_matched()
  status.expect_partial()       # the estimator's and the task's states are not needed
  updates = int(optimizer.iterations.numpy())
  if updates == 0:
    raise ValueError(f"{run.path}: checkpoint {step} holds no Adam update")
  beta_1, beta_2 = float(optimizer.beta_1), float(optimizer.beta_2)
  epsilon = float(optimizer.epsilon)

  def stacked(name, beta):
    return np.concatenate([slot(optimizer, w, name).numpy().ravel().astype(np.float64)
                           for w in model.recurrent_variables]) / (1 - beta ** updates)

  m_hat, v_hat = stacked("momentum", beta_1), stacked("velocity", beta_2)
  live = v_hat > 0
  root = np.sqrt(v_hat[live])
  step_with = np.linalg.norm(m_hat[live] / (root + epsilon))
  step_without = np.linalg.norm(m_hat[live] / root)
  scale = training.grad_scale_factor(config.get("grad_scale", "mean"),
                                     int(config["batch_size"]))
  clip = float(config.get("clip") or 0.0)
  return {"run": str(run.path), "step": step, "grad_scale": config.get("grad_scale", "mean"),
          "clip": clip / scale if clip else math.inf,
          "rms_norm": float(np.sqrt(v_hat.sum())) / scale,
          "eps_effect": float(1 - step_with / step_without) if step_without > 0 else 0.0,
          "eps_share_p999": (float(np.quantile(epsilon / (root + epsilon), 0.999))
                             if live.any() else float("nan")),
          "dead": float(1 - live.mean())}


def table(paths, which: str = "all") -> list[dict]:
  """The rows of every run under ``paths``: each checkpoint (``all``) or one."""
  rows = []
  for run in common.load_runs(paths):
    if which == "all":
      steps = sorted(run.checkpoints)
      if not steps:
        raise FileNotFoundError(f"{run.path}: no checkpoints")
    else:
      steps = [int(which) if which.isdigit() else which]
    rows.extend(moments(run, step) for step in steps)
  return rows


def to_markdown(rows) -> str:
  lines = ["| run | step | grad_scale | clip (mean units) | RMS ‖clip(g)‖ (mean units) "
           "| ε's effect on the step | ε share, 99.9 % | never updated |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['run']} | {r['step']} | {r['grad_scale']} | {r['clip']:g} "
                 f"| {r['rms_norm']:.3g} | {r['eps_effect']:.2g} | {r['eps_share_p999']:.2g} "
                 f"| {r['dead']:.2%} |")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  flags.DEFINE_string("which", "all", "all, latest, best or a checkpoint's step",
                      flag_values=flag_values)
  flags.DEFINE_string("csv", "", "Also write the rows to this CSV file (none if empty).",
                      flag_values=flag_values)
  flags.register_validator(
      "which", lambda w: w in ("all", "latest", "best") or w.isdigit(),
      "--which must be all, latest, best or a step", flag_values=flag_values)


def run(flag_values: flags.FlagValues, paths) -> tuple[str, list[dict]]:
  """The table of the runs under ``paths``: printed, the rows to --csv."""
  common.require_paths(paths)
  rows = table(paths, flag_values.which)
  text = to_markdown(rows)
  print(text)
  if flag_values.csv:
    with open(flag_values.csv, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
  return text, rows


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
