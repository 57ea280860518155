"""One run over several machines: ``tf.distribute.MultiWorkerMirroredStrategy`` from TF_CONFIG.

Each worker process runs the same script with the same flags and its own ``TF_CONFIG``
(``{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type": "worker",
"index": i}}``; docs/cluster.md). The replicas are the workers' local devices, numbered
worker by worker (replica ``w·D + d`` is device d of worker w, D devices per worker), and
the B streams are split across all of them exactly as across one machine's devices
(:mod:`ok_tf.sharding`): the run is the single-device run up to rounding.

Worker 0 (the chief) owns the run directory: config, logs, results, its lock and its
checkpoints. Every replica keeps its own streams' state (task, estimator), which an exact
resume needs, so every other worker w keeps its own checkpoints, of the same steps, in
``RUN_DIR/workers/worker-w/`` (:class:`WorkerDir`); a resume checks that all workers
restored the same step (:func:`agree`). A signal to any worker stops all of them after the
same chunk (:func:`ok_tf.preemption.any_worker`).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Iterable

from absl import logging

from ok_tf import config as config_lib
from ok_tf import lock as lock_lib
from ok_tf import runs
from ok_tf import sharding

#: Where the other workers' checkpoints go in the run directory.
WORKERS_DIR = "workers"


def is_multi_worker(strategy) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
  """Whether this process writes the run directory (worker 0, or any single process)."""
  if strategy is None or not is_multi_worker(strategy):
    return True
  return sharding.worker_index(strategy.cluster_resolver) == 0


def read_tf_config() -> dict:
  """TF_CONFIG, parsed and checked (one-line :class:`ConfigError` otherwise)."""
  text = os.environ.get("TF_CONFIG", "")
  if not text:
    raise config_lib.ConfigError(
        "--strategy=multi_worker needs TF_CONFIG, the cluster and this worker's index, "
        "e.g. '{\"cluster\": {\"worker\": [\"host0:12345\", \"host1:12345\"]}, \"task\": "
        "{\"type\": \"worker\", \"index\": 0}}' (docs/cluster.md)")
  try:
    tf_config = json.loads(text)
    workers = tf_config["cluster"]["worker"]
    index = int(tf_config["task"]["index"])
    kind = tf_config["task"]["type"]
  except (ValueError, KeyError, TypeError) as e:
    raise config_lib.ConfigError(f"TF_CONFIG cannot be read ({type(e).__name__}: {e}): it "
                                 "needs cluster.worker (a list of host:port) and task.type, "
                                 "task.index (docs/cluster.md)")
  if kind == "worker" and not 0 <= index < len(workers):
    raise config_lib.ConfigError(f"TF_CONFIG's task.index {index} is not one of the "
                                 f"{len(workers)} workers of cluster.worker")
  return tf_config


@functools.cache
def strategy():
  """The process's MultiWorkerMirroredStrategy (made once, before other TensorFlow work:
  call it at program start)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  read_tf_config()
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  made = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  logging.info("multi-worker: worker %d of %d, %d replicas in all",
               sharding.worker_index(resolver),
               len(resolver.cluster_spec().as_dict().get("worker", [])),
               made.num_replicas_in_sync)
  return made


def make_strategy(cfg: config_lib.TrainConfig):
  """:func:`strategy`, checked against the run's batch (B must split evenly)."""
  made = strategy()
  n = made.num_replicas_in_sync
  if cfg.batch_size % n:
    raise config_lib.ConfigError(
        f"--batch_size={cfg.batch_size} streams cannot be split evenly across the {n} "
        f"replicas of the cluster; choose a multiple of {n}")
  return made


@functools.cache
def _mean_over_replicas(strategy_):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def mean(x):
    per_replica = strategy_.run(tf.identity, args=(x,))
    return strategy_.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
  return mean


def mean_over_workers(strategy_, values) -> list[float]:
  """The mean over all replicas of each of this process's ``values`` (float64; every
  worker must call it at the same point)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = _mean_over_replicas(strategy_)(tf.constant([float(v) for v in values], tf.float64))
  return [float(v) for v in out.numpy()]


def any_worker(strategy_, flag: bool) -> bool:
  """Whether ``flag`` is set on any worker (all call it after the same chunk)."""
  return mean_over_workers(strategy_, [1.0 if flag else 0.0])[0] > 0


def agree(strategy_, step: int, run_dir) -> None:
  """Checks that every worker restored checkpoint ``step``.

  Raises:
    RunDirError: the workers restored different steps (a worker's checkpoints are
      missing or unreadable).
  """
  mean, square = mean_over_workers(strategy_, [step, float(step) ** 2])
  if abs(square - mean ** 2) > 1e-6 * max(1.0, mean ** 2) or abs(mean - step) > 1e-6:
    raise runs.RunDirError(
        f"the workers of {run_dir} restored different checkpoints (this one step {step}, "
        f"the mean {mean:g}): a worker's checkpoints in {WORKERS_DIR}/ are missing or "
        f"unreadable; resume with the checkpoints every worker has, or start afresh")


class WorkerDir:
  """What a worker other than the chief keeps of a run: its checkpoints (its streams'
  state), in ``RUN_DIR/workers/worker-<index>/``, under a lock of its own. The logs are the
  chief's: the logging methods of :class:`ok_tf.runs.RunDir` do nothing here."""

  def __init__(self, run_dir, index: int, resume: bool):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.path = pathlib.Path(run_dir) / WORKERS_DIR / f"worker-{index}"
    self.resumed = bool(resume)
    self.not_restored = ()
    self._manager = None

  def checkpoint(self, **trackables) -> None:
    self._ckpt = self._tf.train.Checkpoint(**trackables)
    self._manager = self._tf.train.CheckpointManager(self._ckpt, str(self.path), max_to_keep=2)

  def restore_readable(self, allow_missing: Iterable[str] = ()) -> int | None:
    """As :meth:`ok_tf.runs.RunDir.restore_readable`, for this worker's checkpoints."""
    del allow_missing

    def restore(prefix):
      self._ckpt.restore(prefix).assert_existing_objects_matched()
      return runs.step_of(prefix)

    step = runs.restore_newest_readable(self._manager, restore, self.path)
    self._manager = self._tf.train.CheckpointManager(self._ckpt, str(self.path), max_to_keep=2)
    return step

  def save(self, step: int) -> str:
    return self._manager.save(checkpoint_number=int(step))

  @property
  def latest_step(self) -> int | None:
    return runs.step_of(self._manager.latest_checkpoint)

  def write_vocabulary(self, vocabulary) -> None:
    del vocabulary

  def expect_metrics(self, columns) -> None:
    del columns

  def truncate_after(self, step) -> None:
    del step

  def log_metrics(self, row) -> None:
    del row

  def log_eval(self, row) -> None:
    del row

  def scalars(self, step, values, prefix="train") -> None:
    del step, values, prefix

  def save_best(self, step) -> None:
    del step

  def close(self) -> None:
    pass


def open_worker_dir(run_dir, strategy_, resume: bool):
  """(WorkerDir, its lock) of this non-chief worker; creates its folder."""
  index = sharding.worker_index(strategy_.cluster_resolver)
  worker = WorkerDir(run_dir, index, resume)
  worker.path.mkdir(parents=True, exist_ok=True)
  return worker, lock_lib.hold(worker.path, what=f"worker {index}'s folder")
