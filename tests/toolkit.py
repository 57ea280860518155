"""Tools shared by the tests: relative error, z-scores, independent random streams, cells,
BPC through Keras.

Statistical tests draw from ``count`` independent streams (``Generator.split``) and
compare the mean of the per-stream means with its target by a z-score whose standard
error comes from the spread of those means (docs/algorithms.md §7).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ok_tf import cells
from ok_tf import evaluation

#: One generator that traced draws close over: :func:`split_streams` loads the states of
#: the split streams into it in turn (a tf.function retraces for every new Generator).
SHARED = tf.random.Generator.from_key_counter(key=0, counter=[0, 0], alg="philox")


def philox(key: int) -> tf.random.Generator:
  """A fresh Philox generator with key ``key`` and counter 0."""
  return tf.random.Generator.from_key_counter(key=key, counter=[0, 0], alg="philox")


def split_streams(key: int, count: int):
  """``count`` independent streams of ``philox(key)``, replayed through :data:`SHARED`."""
  for child in philox(key).split(count):
    SHARED.reset(child.state)
    yield SHARED


def rel_err(a, b) -> float:
  """max |a − b| / max |b| (b = 0 counts as 1e-300)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def zscores(batch_means, target, floor=1e-9):
  """z of the mean of K batch means against ``target``; the standard error from the
  batch means (``floor`` keeps it positive). Returns (z, mean, se)."""
  bm = np.asarray(batch_means, dtype=np.float64)
  mean = bm.mean(axis=0)
  se = bm.std(axis=0, ddof=1) / np.sqrt(bm.shape[0])
  return (mean - target) / np.sqrt(se ** 2 + floor ** 2), mean, se


def make_cell(name: str, units: int = 3, input_dim: int = 3, dtype: str = "float64",
              seed: int = 0, stddev: float = 0.5):
  """A built cell ``name`` with N(0, stddev²) weights (large enough for non-trivial tests)."""
  cell = cells.get(name, units, dtype=dtype,
                   kernel_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=seed))
  cell.build((None, input_dim))
  return cell


def keras_bpc(model, ids, num_streams):
  """BPC of ``model`` on the text ``ids`` through ``model.predict`` (Keras), on the
  evaluator's contiguous streams."""
  inputs, targets, mask = evaluation.contiguous_streams(ids, num_streams)
  logits = model.predict(inputs, batch_size=len(inputs), verbose=0).astype(np.float64)
  logits -= logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nats = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  return float((nats * mask).sum() / mask.sum() / np.log(2.0))
