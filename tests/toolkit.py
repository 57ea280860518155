"""Tools shared by the tests: relative error, z-scores, independent random streams, cells,
BPC through Keras, and running the training scripts as subprocesses.

Statistical tests draw from ``count`` independent streams (``Generator.split``) and
compare the mean of the per-stream means with its target by a z-score whose standard
error comes from the spread of those means (docs/algorithms.md §7).
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from ok_tf import cells
from ok_tf import evaluation
from ok_tf import philox as philox_lib
from ok_tf import specs

#: One generator that traced draws close over: :func:`split_streams` loads the states of
#: the split streams into it in turn (a tf.function retraces for every new Generator).
SHARED = philox_lib.generator(0)


def philox(key: int) -> tf.random.Generator:
  """A fresh Philox generator with key ``key`` and counter 0."""
  return philox_lib.generator(key)


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
  return float(specs.nats_to_bits((nats * mask).sum() / mask.sum()))


# ----------------------------------------------------------------------------- the scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING_COLUMNS = ("steps_per_sec", "wall_time")  # metrics columns that depend on the machine
PTB_SKIP_REASON = "set OK_TF_DATA to a folder with the PTB character files"


def run_script(script, *args, env_update=None, unset=(), timeout=600):
  """Runs ``python script args`` in the repository root; returns (CompletedProcess, seconds)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  for name in unset:
    env.pop(name, None)
  env.update(env_update or {})
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  return proc, time.perf_counter() - start


def check_ok(proc):
  """Asserts that the process exited with 0 (else shows the end of its stderr)."""
  assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"


def read_rows(path):
  """(header, rows as dicts of strings) of a CSV file."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def without_timing(rows):
  """``rows`` without the wall-time columns (what differs between equal runs)."""
  return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def ptb_data_dir():
  """$OK_TF_DATA if it holds the three character files, else None."""
  d = os.environ.get("OK_TF_DATA")
  if d and all((pathlib.Path(d) / f"{s}.txt").is_file()
               or (pathlib.Path(d) / f"ptb.char.{s}.txt").is_file()
               for s in ("train", "valid", "test")):
    return pathlib.Path(d)
  return None
