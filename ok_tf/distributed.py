"""The devices and the ``tf.distribute`` strategy of a run (``--strategy``, ``--devices``,
``--cpu_devices``): :func:`configure_devices` splits the CPU into logical devices,
:func:`make_strategy` makes the strategy the trainers of :mod:`ok_tf.training` run under
(their streams split across its replicas by :mod:`ok_tf.sharding`), :func:`scope` makes
variables in it.  On several machines (:mod:`ok_tf.multi_worker`) the replicas are
numbered across the workers.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import tensorflow as tf
from absl import logging

from ok_tf import config as config_lib
from ok_tf import multi_worker


def configure_devices(cfg: config_lib.TrainConfig) -> None:
  """Split the CPU into ``cfg.cpu_devices`` logical devices (before TensorFlow starts)."""
  if cfg.cpu_devices <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cfg.cpu_devices)])
  except RuntimeError as e:
    raise config_lib.ConfigError(f"--cpu_devices must be set before TensorFlow starts ({e})")


def make_strategy(cfg: config_lib.TrainConfig) -> Optional[tf.distribute.Strategy]:
  """``None`` for one device, a MultiWorkerMirroredStrategy for ``multi_worker``
  (:func:`ok_tf.multi_worker.make_strategy`), else a MirroredStrategy over ``cfg.devices``.

  Without ``--devices`` it takes all GPUs, or, with none, all logical CPUs.
  """
  if cfg.strategy == "none":
    return None
  if cfg.strategy == "multi_worker":
    return multi_worker.make_strategy(cfg)
  devices = [d.strip() for d in cfg.devices.split(",") if d.strip()]
  if not devices:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
  try:
    strategy = tf.distribute.MirroredStrategy(devices)
  except (ValueError, RuntimeError) as e:
    raise config_lib.ConfigError(f"--devices={cfg.devices!r} cannot be used: {e}")
  n = strategy.num_replicas_in_sync
  if cfg.batch_size % n:
    raise config_lib.ConfigError(
        f"--batch_size={cfg.batch_size} streams cannot be split evenly across {n} devices "
        f"({', '.join(devices)}); choose a multiple of {n}")
  logging.info("mirrored over %d devices: %s (%d streams each)", n, ", ".join(devices),
               cfg.batch_size // n)
  return strategy


def scope(strategy: Optional[tf.distribute.Strategy]):
  """``strategy.scope()`` (mirrored variables), or no context for one device."""
  return strategy.scope() if strategy is not None else contextlib.nullcontext()
