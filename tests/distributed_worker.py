"""Run by tests/test_distributed.py in a fresh process (devices are set before TF starts).

Splits the CPU into two logical devices, then for each case trains the same model with
the same seed once on one device and once with ``MirroredStrategy`` over the two logical
devices, and prints one JSON line per case: the largest relative difference of the
weights and Adam's slots, of the per-step losses, and the task metrics after the same
steps (two chunks, so the state carried between chunks is checked too).

    python tests/distributed_worker.py 6 ok:copy:1.0 tbptt:ptb:0   # steps, method:task:clip
    python tests/distributed_worker.py 6 kf:copy:1.0:shadow,jit    # options: shadow, jit
"""

from __future__ import annotations

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402  (after the device setup)
import numpy as np  # noqa: E402

from ok_tf import diagnostics  # noqa: E402
from ok_tf import distributed  # noqa: E402
from ok_tf import estimators  # noqa: E402
from ok_tf import models  # noqa: E402
from ok_tf import training  # noqa: E402
from ok_tf.tasks import text as text_task  # noqa: E402
from ok_tf.tasks import copy as copy_task  # noqa: E402

import toolkit  # noqa: E402

BATCH = 4
UNITS = 6


def make_task(name):
  if name == "copy":
    # Low threshold so the curriculum moves during the test (shared level on all shards).
    return copy_task.CopyTask(batch_size=BATCH, max_length=16, threshold=3.0,
                              ema_decay=0.5), copy_task.VOCAB_SIZE
  ids = np.random.default_rng(3).integers(0, 7, size=500)
  return text_task.TextStreams(ids, BATCH, reset_every=5, vocab_size=7), 7


def build(method, task_name, strategy, clip, options=()):
  keras.utils.set_random_seed(0)
  task, vocab = make_task(task_name)
  with distributed.scope(strategy):
    model = models.RecurrentModel("rhn", UNITS, vocab, dtype="float64")
    optimizer = training.make_optimizer(1e-2)
  kwargs = dict(clip_norm=clip, seed=5, strategy=strategy, jit_compile="jit" in options)
  if method == "tbptt":
    trainer = training.TBPTTTrainer(model, task, optimizer, BATCH, 3, **kwargs)
  else:
    est = estimators.get(method, model.cell,
                         rank=2 if estimators.METHODS[method].takes_rank else None)
    shadow = diagnostics.Shadow(model) if "shadow" in options else None
    trainer = training.OnlineTrainer(model, est, task, optimizer, BATCH, shadow=shadow, **kwargs)
  return trainer, model, optimizer


def values(model, optimizer):
  out = [np.asarray(v) for v in model.weights]
  out += [np.asarray(v) for v in optimizer.variables]
  return out


rel = toolkit.rel_err


def compare(method, task_name, steps, clip, strategy, options):
  single, m1, o1 = build(method, task_name, None, clip, options)
  dist, m2, o2 = build(method, task_name, strategy, clip, options)
  out1 = [single.run(steps) for _ in range(2)]
  out2 = [dist.run(steps) for _ in range(2)]
  weights = max(rel(a, b) for a, b in zip(values(m2, o2), values(m1, o1)))
  losses = max(rel(a["loss_bits"], b["loss_bits"]) for a, b in zip(out2, out1))
  metrics = {k: [float(out1[-1][k]), float(out2[-1][k])] for k in out1[-1]
             if k not in ("loss_bits", "weight")}
  moved = rel(values(m1, o1)[0], np.asarray(build(method, task_name, None, clip)[1].weights[0]))
  print(json.dumps({"method": method, "task": task_name, "options": list(options),
                    "weights": weights,
                    "losses": losses, "metrics": metrics, "moved": moved,
                    "replicas": dist.replicas, "traces": dist.compiled.experimental_get_tracing_count()}))


def main(argv):
  steps = int(argv[1])
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  for case in argv[2:]:
    method, task_name, clip, *options = case.split(":")
    compare(method, task_name, steps, float(clip), strategy,
            options[0].split(",") if options else ())


if __name__ == "__main__":
  main(sys.argv)
