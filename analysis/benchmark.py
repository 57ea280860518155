"""Speed and memory of the online training step of every method, against its bound.

    python -m analysis.benchmark [--methods=ok,uoro,rtrl,tbptt] [--configs=copy,ptb]
        [--sizes=32,64,128,256] [--steps=0] [--min_time=3] [--repeats=3]
        [--out_dir=benchmark_out/] [--device=auto|cpu|gpu] [--nobreakdown]
        [--fine_breakdown] [--estimator=configs|all|none] [--rtrl_max_n=64]

The grid: the named configurations (``copy``: n 128, r 16, B 16, V 4; ``ptb``: n 256,
r 8, B 32, V 50; or ``n:r:B:V``) and an n sweep at the copy configuration's r, B, V
(``--sweep_rank``, ``--sweep_batch``, ``--sweep_vocab``); a shape in both is measured
once.  RHN cells (``--cell``), random symbols as data (:class:`RandomSymbols`; all
streams reset every ``--reset_every`` = 100 steps as in the PTB protocol).  Exact RTRL
runs only up to n = ``--rtrl_max_n`` (64): it costs O(n⁴) per step and its influence
matrix alone holds 0.28 GB at n = 128, B = 16 (the skipped shapes are listed).

For every method and shape this times compiled loops of N steps (the library's
``tf.function`` chunks; one warm-up call compiles first), best of ``--repeats`` runs,
N chosen so that one run takes at least ``--min_time`` seconds (``--steps`` fixes N);
the repeats of the loops of one (method, shape) are interleaved, so that a change of
the machine's load affects them alike (the harness: analysis/timing.py):

* ``full``: the whole online training step, ``OnlineTrainer.run(N)`` (data, reset,
  estimator step, readout, loss, exact readout gradient, recurrent gradient, clipping,
  Adam); for ``tbptt`` ``TBPTTTrainer.run(N)``: N characters per stream (N/T windows,
  one Adam update each), so its "step" is one character;
* ``estimator``: the bare ``est.step`` in a loop (state carried in variables), so that
  the step splits into the estimator and the rest (``--estimator``: at the named
  configurations by default, ``all`` for every shape); the table gives it over the bound
  too (for exact RTRL, how close its step comes to H_t·G; analysis/estimator_steps.py
  has every estimator's step beside its bound or floor on tanh networks);
* ``bound``: the method's dominant product alone in a loop of the same shapes:
  ``KroneckerSum.propagate(H, A)`` = ``tf.matmul(H[:, None], A)`` with H ``[B, S, S]``
  and A ``[B, r, S, k·n]`` (what the library computes) for ok / kf_avg / kf, ``H_t G``
  with G ``[B, S, a·k·n]`` for rtrl; uoro and tbptt have no such product (their cost is
  O(n²) per step).

With ``--breakdown`` (default), OK at the named configurations is also split into the
stages of ``OK.step``: ``OK.linearize`` (``cell.linearize`` + ``cell.d_diagonals``), the
H·A products (``OK.propagate``: the bound) and ``OK.reduce``
(``kronecker.ok_reduce_structured``), and, outside ``est.step``, ``est.reset`` (timed
with no stream resetting: what 99 of 100 PTB steps cost, the ``tf.cond`` that skips the
``tf.where``) and ``est.gradient``; ``--fine_breakdown`` splits ``ok_reduce`` further
into the pieces of ``kronecker`` it is made of (``gram_with_diagonals`` and
``orthonormalize_gram``: Gram matrix and eigh of the right family; ``mix_with_diagonals``:
the mixing matmul; ``orthonormalize`` and ``opt``: the small SVD/eigh work).  Each part
runs alone in its own loop (runs of at least ``--breakdown_min_time`` = 1 s, best of
``--repeats``), so the parts need not add up exactly to the whole.

Peak memory (see ``timing.MemoryMeter``): ``peak_mem_bytes`` is the peak of TensorFlow's
allocator (``get_memory_info`` on GPU:0, or on CPU:0, which TF 2.21 supports too) over
a few steps of the full step after its compile, with only the trainer alive (the
previous rows are freed first; ``mem_baseline_bytes`` is what the allocator still held
before the row was built, as TF keeps about one state size per deleted online trainer,
and ``peak_mem_above_baseline_bytes`` the difference).  On CPU also ``peak_rss_bytes``,
the process's peak RSS over the same steps, which counts the TF runtime and memory the
C allocator keeps from earlier rows and so hardly measures one row.  ``state_mb`` is the
exact size of the method's approximation state.

Outputs in ``--out_dir``: ``benchmark.json`` (every number, the flags, the device, the
load average), ``benchmark.md`` (the table) and ``benchmark.png`` (log-log time per
step against n on the sweep with least-squares slopes; expected at large n: OK ≈ 3,
exact RTRL ≈ 4, UORO and TBPTT ≈ 2; smaller where fixed per-step costs dominate).
Prints the table and the paths of the three files; the progress goes to the log.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
import matplotlib  # pylint: disable=g-import-not-at-top
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import tables  # pylint: disable=g-import-not-at-top
from analysis import timing  # pylint: disable=g-import-not-at-top
from ok_tf import cells  # pylint: disable=g-import-not-at-top
from ok_tf import estimators as estimators_lib  # pylint: disable=g-import-not-at-top
from ok_tf import kronecker  # pylint: disable=g-import-not-at-top
from ok_tf import models  # pylint: disable=g-import-not-at-top
from ok_tf import training  # pylint: disable=g-import-not-at-top
from ok_tf.tasks import base as tasks_base  # pylint: disable=g-import-not-at-top

# The two published configurations (docs/protocol.md, "The published configurations and
# results"): RHN cells, one-hot inputs.
CONFIGS = {
    "copy": dict(n=128, r=16, B=16, V=4, clip=1.0),
    "ptb": dict(n=256, r=8, B=32, V=50, clip=100.0),
}
DEFAULT_METHODS = ("ok", "uoro", "rtrl", "tbptt")     # of the registry estimators.METHODS
DEFAULT_SIZES = (32, 64, 128, 256)
BOUND_COLOR = "k"        # the methods' colours are estimators.color's


# ----------------------------------------------------------------------------- task


class RandomSymbols:
  """Synthetic task: B streams of uniform random symbols.

  The protocol of :mod:`ok_tf.tasks.base` (``init``, ``next``, ``observe``,
  ``metrics``; the trainers need no more of it); the data costs one small uniform draw per step.  All streams reset
  every ``reset_every`` steps (0: never) as in the PTB protocol; the reset mask is
  computed from the step count, never a constant, so that TensorFlow cannot fold the
  trainer's per-step ``est.reset`` (a ``tf.where`` over the whole state) away, as it
  would for a constant all-False mask, while with a real task it runs every step.
  """

  def __init__(self, batch_size: int, vocab_size: int, reset_every: int = 100):
    self.batch_size = int(batch_size)
    self.vocab_size = int(vocab_size)
    self.reset_every = int(reset_every)

  def init(self, rng):
    del rng
    return tf.zeros([], tf.int64)

  def next(self, state, rng):
    ids = rng.uniform([2, self.batch_size], 0, self.vocab_size, dtype=tf.int32)
    if self.reset_every:
      reset = tf.equal(state % self.reset_every, 0)
    else:
      reset = tf.equal(state, -1)
    return state + 1, tasks_base.Data(ids[0], ids[1], tf.fill([self.batch_size], reset),
                                      tasks_base.full_weight(self.batch_size))

  def observe(self, state, loss_bits):
    del loss_bits
    return state

  def metrics(self, state):
    del state
    return {}


# ----------------------------------------------------------------------------- loops


def bound_runner(kind: str, cell, rank: int, batch: int):
  """The dominant product alone, computed as the step computes it: ``A ← H[:, None] A``
  (ok; ``KroneckerSum.propagate``) or ``G ← H G`` (rtrl; ``estimators.stream_matmul``)."""
  s = cell.state_size
  h = timing.orthogonal(batch, s, 1)
  if kind == "ha":
    a = tf.random.stateless_normal([batch, rank, s, cell.kernel_columns], [2, 1])
    return timing.loop(lambda a: estimators_lib.KroneckerSum.propagate(h, a), a)
  if kind == "hg":
    g = tf.random.stateless_normal([batch, s, cell.hhat_size * cell.kernel_columns], [2, 1])
    return timing.loop(lambda g: estimators_lib.stream_matmul(h, g), g)
  raise ValueError(kind)


def estimator_runner(est, model, batch: int, seed: int = 0):
  """The bare ``est.step`` on random one-hot inputs, its state carried in variables."""
  rng = training.make_generator(seed, 2)
  vocab = model.vocab_size

  def body(state):
    ids = rng.uniform([batch], 0, vocab, dtype=tf.int32)
    return est.step(state, model.one_hot(ids), rng)

  return timing.loop(body, est.init(batch))


def breakdown_runners(est, model, batch: int, seed: int = 0, fine: bool = False) -> dict:
  """Loops timing the parts of OK's step and gradient one at a time (dependencies carried).

  The stages of ``OK.step`` as it runs them (``est.linearize``, ``est.reduce``; the third,
  ``est.propagate``, is the bound), ``est.gradient`` and ``est.reset``; with ``fine``
  the pieces of ``kronecker.ok_reduce_structured``.
  """
  cell = model.cell
  rank = est.rank
  s, a, cols = cell.state_size, cell.hhat_size, cell.kernel_columns
  rng = training.make_generator(seed, 3)
  vocab = model.vocab_size
  h0 = tf.random.stateless_uniform([batch, s], [3, 1], -0.5, 0.5)
  x0 = model.one_hot(tf.random.stateless_uniform([batch], [4, 1], 0, vocab, dtype=tf.int32))
  zero = est.init(batch)
  probe, diagonals = est.linearize(zero._replace(h=h0), x0)   # D_t sparse (S·k non-zeros)

  def linearize(carry):
    h, _, _ = carry
    ids = rng.uniform([batch], 0, vocab, dtype=tf.int32)
    st, last = est.linearize(zero._replace(h=h), model.one_hot(ids))
    return st.state, st.jacobian, last.values

  hhat = probe.hhat

  def reduce(carry):
    u, af = carry
    red = est.reduce(u, hhat, af, diagonals, rng)
    return red.left, red.right

  u0 = tf.random.stateless_normal([batch, rank, a], [5, 1])
  a0 = tf.random.stateless_normal([batch, rank, s, cols], [6, 1]) * 0.1
  fixed = training.StateVariables(zero._replace(u=u0, a=a0))

  def gradient(acc):
    dl_ds = rng.normal([batch, s])
    return acc + est.gradient(fixed.read(), dl_ds)[0]

  def reset(state):   # what the trainer does every step; a mask TF cannot fold (all False)
    return est.reset(state, rng.uniform([batch]) < 0.0)

  runners = {
      "linearize": timing.loop(linearize, (h0, probe.jacobian, diagonals.values)),
      "ok_reduce": timing.loop(reduce, (u0, a0)),
      "gradient": timing.loop(gradient, tf.zeros([a, cols])),
      "reset": timing.loop(reset, fixed.read()),
  }
  if fine:
    q = rank + 1
    family = training.StateVariables(a0)      # the r dense right factors H·A_i, [B, r, S, kn]
    left0 = tf.concat([u0, hhat[:, None, :]], axis=1)
    mix = timing.orthogonal(batch, q, 7)

    def gram_eigh(acc):   # the right family's Gram matrix (blockwise) and its eigh
      gram = kronecker.gram_with_diagonals(family.read(), diagonals)
      return acc + tf.reduce_sum(kronecker.orthonormalize_gram(gram).to_basis)

    def mixing(x):        # the new factors: an r-term mixing of the H·A_i, then D added
      return kronecker.mix_with_diagonals(mix[:, :rank], x, diagonals)

    def small(acc):       # orthonormalize(left), C = R_uᵀ R_A, Opt(C, r) (the SVD)
      bu = kronecker.orthonormalize(left0 + acc[:, None, None])
      c = tf.matmul(bu.coefficients, mix, transpose_a=True)
      lmat, rmat = kronecker.opt(c, rank, rng)
      return acc + tf.reduce_sum(lmat, [1, 2]) + tf.reduce_sum(rmat, [1, 2])

    runners.update({"gram_eigh": timing.loop(gram_eigh, tf.zeros([])[None]),
                    "mixing": timing.loop(mixing, family.read()),
                    "small": timing.loop(small, tf.zeros([batch]))})
  return runners


def trainer_runner(method: str, model, shape: dict, truncation: int, reset_every: int,
                   seed: int = 0):
  """(run(N), estimator or None) for the library's trainer of ``method``."""
  task = RandomSymbols(shape["B"], shape["V"], reset_every)
  opt = training.make_optimizer(1e-3)
  if method not in estimators_lib.ESTIMATORS:     # tbptt
    trainer = training.TBPTTTrainer(model, task, opt, shape["B"], truncation,
                                    clip_norm=shape["clip"], seed=seed)
    est = None
  else:
    est = estimators_lib.get(method, model.cell, rank=_rank(method, shape))
    trainer = training.OnlineTrainer(model, est, task, opt, shape["B"],
                                     clip_norm=shape["clip"], seed=seed)

  def run(num):
    trainer.run(num)

  return run, est


def _rank(method, shape):
  """The rank ``method`` runs with at ``shape`` (the registry's rank rule)."""
  spec = estimators_lib.method(method)
  return spec.rank_for(shape["r"] if spec.takes_rank else None)


def state_bytes(method: str, cell, shape: dict, truncation: int) -> int:
  """Bytes of the method's per-batch state (float32; the registry's cost model)."""
  return estimators_lib.method(method).cost(
      estimators_lib.Dims.of(cell), _rank(method, shape), shape["B"], truncation).state_bytes


def expected_slope(method: str, cell: str, rank: int, vocab: int, truncation: int) -> int:
  """The exponent of n in the method's cost model at large n (log2 of its flops at
  n = 8192 over those at 4096, rounded): what the sweep's slope should approach."""
  spec = estimators_lib.method(method)
  r = spec.rank_for(rank if spec.takes_rank else None)
  flops = [spec.cost(estimators_lib.Dims.of_config(cell, n, vocab), r, 1, truncation).flops
           for n in (4096, 8192)]
  return round(math.log2(flops[1] / flops[0]))


def bound_kind(method: str) -> str | None:
  """The dominant product of ``method`` (its ``dominant_product``): "ha" (H·A_i) for the
  Kronecker sums, "hg" (H·G) for exact RTRL, None for the others."""
  return estimators_lib.method(method).dominant_product


def bound_flops(kind: str, cell, rank: int, batch: int) -> float:
  s, a, cols = cell.state_size, cell.hhat_size, cell.kernel_columns
  if kind == "ha":
    return 2.0 * batch * rank * s * s * cols
  return 2.0 * batch * s * s * a * cols


# ----------------------------------------------------------------------------- grid


def parse_shape(spec: str) -> tuple[str, dict]:
  """``copy`` / ``ptb`` or ``n:r:B:V`` (clip 1)."""
  if spec in CONFIGS:
    return spec, dict(CONFIGS[spec])
  parts = spec.split(":")
  if len(parts) != 4:
    raise ValueError(f"--configs takes {', '.join(CONFIGS)} or n:r:B:V, got {spec!r}")
  n, r, b, v = (int(p) for p in parts)
  return spec, dict(n=n, r=r, B=b, V=v, clip=1.0)


def build_grid(configs, sizes, sweep_rank, sweep_batch, sweep_vocab) -> list[dict]:
  """Unique shapes with their labels (a named config and a sweep point may coincide)."""
  shapes = {}
  for spec in configs:
    name, shape = parse_shape(spec)
    key = (shape["n"], shape["r"], shape["B"], shape["V"])
    shapes.setdefault(key, dict(shape, labels=[]))["labels"].append(name)
  for n in sizes:
    key = (n, sweep_rank, sweep_batch, sweep_vocab)
    entry = shapes.setdefault(key, dict(n=n, r=sweep_rank, B=sweep_batch, V=sweep_vocab,
                                        clip=1.0, labels=[]))
    entry["labels"].append("sweep")
  return list(shapes.values())


# ----------------------------------------------------------------------------- run


def benchmark_shape(method, shape, args, memory, bounds):
  """Times one (method, shape): the full step, est.step, the bound, the breakdown."""
  n = shape["n"]
  gc.collect()   # free the previous rows' models and loops before the memory baseline
  baseline = memory.current()
  tf.keras.utils.set_random_seed(0)
  model = models.RecurrentModel(args.cell, n, shape["V"])
  cell = model.cell
  spec = estimators_lib.method(method)
  row = dict(method=method, labels=list(shape["labels"]), n=n, r=_rank(method, shape),
             B=shape["B"], V=shape["V"], T=args.truncation if spec.takes_truncation else None,
             cell=args.cell, state_mb=state_bytes(method, cell, shape, args.truncation) / 2**20)
  run, est = trainer_runner(method, model, shape, args.truncation, args.reset_every)
  multiples = {"full": args.truncation if spec.takes_truncation else 1}
  # peak memory of the training step alone: compile, then a few steps (one TBPTT window)
  compile_s = timing.timed(run, multiples["full"])
  memory.reset()
  run(max(2, multiples["full"]))
  peak = memory.peak()
  runners = {"full": run}
  named = any(label != "sweep" for label in shape["labels"])
  if est is not None and (args.estimator == "all" or (args.estimator == "configs" and named)):
    runners["estimator"] = estimator_runner(est, model, shape["B"])
  kind = bound_kind(method)
  rank = row["r"] or 1
  bound_key = (kind, n, rank, shape["B"], shape["V"])
  if kind is not None and args.bound and bound_key not in bounds:
    runners["bound"] = bound_runner(kind, cell, rank, shape["B"])
  breakdown = est is not None and est.has_stages and args.breakdown and named
  if breakdown:
    runners.update(breakdown_runners(est, model, shape["B"], fine=args.fine_breakdown))
  main_runners = {k: v for k, v in runners.items() if k in ("full", "estimator", "bound")}
  res = timing.measure_group(main_runners, args.min_time, args.repeats, args.steps, multiples)
  parts = {k: v for k, v in runners.items() if k not in main_runners}
  if parts:
    res.update(timing.measure_group(parts, args.breakdown_min_time, args.repeats, args.steps))
  load = round(os.getloadavg()[0], 2)
  full = res["full"]
  row.update(steps=full["steps"], times_s=full["times_s"], compile_s=round(compile_s, 3),
             loadavg_1m=load, peak_mem_bytes=peak.get("peak_mem_bytes"),
             peak_rss_bytes=peak.get("peak_rss_bytes"), mem_baseline_bytes=baseline,
             peak_mem_above_baseline_bytes=(None if baseline is None or "peak_mem_bytes" not in peak
                                            else peak["peak_mem_bytes"] - baseline),
             ms_per_step=1e3 * full["sec_per_step"], steps_per_s=1.0 / full["sec_per_step"])
  logging.info("  %-7s full      %10.3f ms/step  (N=%d, load %s)", method,
               row["ms_per_step"], full["steps"], load)
  if "estimator" in res:
    row["estimator_ms"] = 1e3 * res["estimator"]["sec_per_step"]
    row["rest_ms"] = row["ms_per_step"] - row["estimator_ms"]
    logging.info("  %-7s est.step  %10.3f ms/step", method, row["estimator_ms"])
  if "bound" in res:
    flops = bound_flops(kind, cell, rank, shape["B"])
    sec = res["bound"]["sec_per_step"]
    bounds[bound_key] = dict(kind="H·A_i (r products)" if kind == "ha" else "H·G", ms=1e3 * sec,
                             gflops=flops / 1e9, gflop_per_s=flops / sec / 1e9, loadavg_1m=load)
    logging.info("  %-7s %s        %10.3f ms/step  (%.1f GFLOP/s)", "bound", kind, 1e3 * sec,
                 flops / sec / 1e9)
  if bound_key in bounds:
    b = bounds[bound_key]
    row.update(bound=b["kind"], bound_ms=b["ms"], bound_gflop_per_s=b["gflop_per_s"],
               ratio_to_bound=row["ms_per_step"] / b["ms"])
    if "estimator_ms" in row:
      row["estimator_ratio_to_bound"] = row["estimator_ms"] / b["ms"]
  if breakdown:
    parts = {name: 1e3 * x["sec_per_step"] for name, x in res.items()
             if name not in ("full", "estimator", "bound")}
    for name, ms in parts.items():
      logging.info("  ok      %-10s%10.3f ms/step", name, ms)
    row["breakdown_ms"] = _breakdown(row, parts)
  return row


def _breakdown(row, parts) -> dict:
  """Full step = est.step (linearize + H·A + ok_reduce + other) + gradient + other."""
  out = {"full_step": row["ms_per_step"]}
  if "estimator_ms" in row:
    out["est.step"] = row["estimator_ms"]
  out["linearize (cell.linearize + d_diagonals)"] = parts["linearize"]
  if "bound_ms" in row:
    out["H·A products"] = row["bound_ms"]
  out["ok_reduce_structured"] = parts["ok_reduce"]
  if "estimator_ms" in row and "bound_ms" in row:
    out["est.step other (reshapes, copies)"] = (row["estimator_ms"] - parts["linearize"]
                                                - row["bound_ms"] - parts["ok_reduce"])
  if "gram_eigh" in parts:
    out["  ok_reduce: Gram (blockwise) + eigh of the right family"] = parts["gram_eigh"]
    out["  ok_reduce: mixing (r x r matmul + D on its diagonals)"] = parts["mixing"]
    out["  ok_reduce: left basis, C, Opt (SVD)"] = parts["small"]
    out["  ok_reduce: other (balance, small concats, ...)"] = (
        parts["ok_reduce"] - parts["gram_eigh"] - parts["mixing"] - parts["small"])
  out["est.reset (no stream resetting)"] = parts["reset"]
  out["est.gradient"] = parts["gradient"]
  if "estimator_ms" in row:
    out["rest other (data, readout, loss, clip, Adam)"] = (
        row["rest_ms"] - parts["gradient"] - parts["reset"])
  return out


def fit_slopes(rows, bounds, sizes, sweep_key, cell: str = cells.default(), truncation: int = 25
               ) -> dict:
  """Least-squares slope of log(ms/step) against log(n) over the sweep, per method, with
  the slope its cost model expects (:func:`expected_slope`)."""
  out = {}
  series = {}
  for row in rows:
    if "sweep" in row["labels"]:
      series.setdefault(row["method"], []).append((row["n"], row["ms_per_step"]))
  r, b, v = sweep_key
  ha = sorted((k[1], x["ms"]) for k, x in bounds.items()
              if k[0] == "ha" and k[1] in sizes and k[2:] == (r, b, v))
  if ha:
    series["bound (H·A)"] = ha
  for name, pts in series.items():
    pts = sorted(pts)
    entry = {"n": [p[0] for p in pts], "ms": [p[1] for p in pts],
             "expected": 3 if name.startswith("bound") else expected_slope(
                 name, cell, r, v, truncation)}
    if len(pts) >= 2:
      x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
      entry["slope"] = float(np.polyfit(x, y, 1)[0])
      entry["slope_top2"] = float((y[-1] - y[-2]) / (x[-1] - x[-2]))
    else:
      entry["slope"] = entry["slope_top2"] = None
    out[name] = entry
  return out


def plot(slopes, path, title):
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  for name, entry in slopes.items():
    color = BOUND_COLOR if name.startswith("bound") else estimators_lib.color(name)
    style = "--" if name.startswith("bound") else "-"
    label = name
    if entry["slope"] is not None:
      label += f" (slope {entry['slope']:.2f}; largest two n {entry['slope_top2']:.2f})"
      n = np.array(entry["n"], float)
      coef = np.polyfit(np.log(n), np.log(entry["ms"]), 1)
      ax.plot(n, np.exp(np.polyval(coef, np.log(n))), style, color=color, alpha=0.5, lw=1)
    ax.plot(entry["n"], entry["ms"], "o" if style == "-" else "s", color=color, label=label,
            markerfacecolor="none" if name.startswith("bound") else color)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("hidden units n")
  ax.set_ylabel("time per step (ms)")
  ax.set_title(title, fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def _fmt(x, spec=".2f"):
  return "—" if x is None else format(x, spec)


def _mb(x):
  return "—" if x is None else f"{x / 2**20:.1f}"


def table(rows) -> str:
  """Markdown table of the rows."""
  header = ["shape", "method", "n", "r", "B", "ms/step", "steps/s", "est.step ms", "rest ms",
            "bound ms", "ratio to bound", "est.step / bound", "TF peak MB (above baseline)",
            "RSS MB", "state MB", "load 1m"]
  cells = ([
      "+".join(r["labels"]), estimators_lib.label(r["method"], r["r"], r["T"]), r["n"],
      _fmt(r["r"], "d") if r["r"] else "—", r["B"], f"{r['ms_per_step']:.2f}",
      f"{r['steps_per_s']:.1f}", _fmt(r.get("estimator_ms")), _fmt(r.get("rest_ms")),
      _fmt(r.get("bound_ms")), _fmt(r.get("ratio_to_bound")),
      _fmt(r.get("estimator_ratio_to_bound")),
      f"{_mb(r.get('peak_mem_bytes'))} ({_mb(r.get('peak_mem_above_baseline_bytes'))})",
      _mb(r.get("peak_rss_bytes")), f"{r['state_mb']:.2f}", r["loadavg_1m"]] for r in rows)
  return tables.markdown(cells, header)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``."""
  fv = flag_values
  flags.DEFINE_list("methods", list(DEFAULT_METHODS),
                    f"comma list of {', '.join(estimators_lib.METHODS)}", flag_values=fv)
  flags.DEFINE_list("configs", list(CONFIGS), "comma list of copy, ptb or n:r:B:V ('' for none)",
                    flag_values=fv)
  flags.DEFINE_list("sizes", [str(n) for n in DEFAULT_SIZES],
                    "n sweep (at --sweep_rank, --sweep_batch, --sweep_vocab; '' for none)",
                    flag_values=fv)
  flags.DEFINE_integer("sweep_rank", CONFIGS["copy"]["r"], "r of the n sweep", flag_values=fv)
  flags.DEFINE_integer("sweep_batch", CONFIGS["copy"]["B"], "B of the n sweep", flag_values=fv)
  flags.DEFINE_integer("sweep_vocab", CONFIGS["copy"]["V"], "V of the n sweep", flag_values=fv)
  flags.DEFINE_integer("steps", 0, "steps per timed run (0: enough for --min_time seconds)",
                       flag_values=fv)
  flags.DEFINE_float("min_time", 3.0, "seconds per timed run (at least)", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "timed runs; the best is reported", flag_values=fv)
  flags.DEFINE_integer("truncation", 25, "T of tbptt", flag_values=fv)
  flags.DEFINE_integer("reset_every", 100,
                       "the synthetic streams reset every this many steps (0: never)",
                       flag_values=fv)
  flags.DEFINE_enum("cell", cells.default(), list(cells.CELLS), "the cell", flag_values=fv)
  flags.DEFINE_integer("rtrl_max_n", 64, "exact RTRL only up to this n (its step is O(n^4))",
                       flag_values=fv)
  flags.DEFINE_string("out_dir", "benchmark_out/", "output folder", flag_values=fv)
  flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"], "where to run", flag_values=fv)
  flags.DEFINE_boolean("breakdown", True, "split OK's step into its parts at the named configs",
                       flag_values=fv)
  flags.DEFINE_float("breakdown_min_time", 1.0,
                     "seconds per timed run of each part of the breakdown (at least)",
                     flag_values=fv)
  flags.DEFINE_boolean("fine_breakdown", False,
                       "with --breakdown, also split ok_reduce (Gram+eigh, mixing, SVD)",
                       flag_values=fv)
  flags.DEFINE_enum("estimator", "configs", ["configs", "all", "none"],
                    "where to also time the bare est.step: at the named configurations "
                    "(default), at every shape, or nowhere", flag_values=fv)
  flags.DEFINE_boolean("bound", True, "also time the bound (the dominant product alone)",
                       flag_values=fv)
  flags.register_validator(
      "methods", lambda v: all(m in estimators_lib.METHODS for m in v),
      f"unknown method; choose from {', '.join(estimators_lib.METHODS)}", flag_values=fv)
  flags.register_validator("configs", _valid_shapes,
                           f"--configs takes {', '.join(CONFIGS)} or n:r:B:V", flag_values=fv)
  flags.register_validator("sizes", common.is_int_list, "--sizes takes integers",
                           flag_values=fv)


def _valid_shapes(specs) -> bool:
  try:
    for spec in specs:
      parse_shape(spec)
  except ValueError:
    return False
  return True


def _select_device(choice: str) -> str:
  gpus = tf.config.list_physical_devices("GPU")
  if choice == "gpu" and not gpus:
    raise SystemExit("--device=gpu: TensorFlow sees no GPU")
  if choice == "cpu" or not gpus:
    try:
      tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
      pass   # runtime already initialised: the tf.device scope below still pins the ops
    return "/CPU:0"
  return "/GPU:0"


def run(flag_values: flags.FlagValues, argv=()) -> dict:
  """Runs the benchmark the flags describe; returns what benchmark.json holds."""
  if argv:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv)}")
  args = common.flag_namespace(define_flags, flag_values)
  args.sizes = common.int_list(args.sizes)
  start = time.perf_counter()
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  device = _select_device(args.device)
  gpu = device.startswith("/GPU")
  memory = timing.MemoryMeter(device)
  grid = build_grid(args.configs, args.sizes, args.sweep_rank, args.sweep_batch,
                    args.sweep_vocab)
  meta = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "device": device,
      "device_name": (tf.config.experimental.get_device_details(
          tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU") if gpu
                      else timing.cpu_name()),
      "cpu_count": os.cpu_count(),
      "tensorflow": tf.__version__,
      "python": platform.python_version(),
      "loadavg_start": [round(x, 2) for x in os.getloadavg()],
      "memory": "tf_allocator_peak" if memory.tf_stats else "rss",
      "memory_note": memory.note,
      "timing": (f"best of {args.repeats} runs of N steps after a warm-up (compile) call; "
                 + (f"N = {args.steps}" if args.steps else
                    f"N chosen so that one run takes >= {args.min_time} s")),
      "args": vars(args),
  }
  logging.info("device %s (%s), %s CPUs, TF %s, load average %s", device, meta["device_name"],
               meta["cpu_count"], tf.__version__, meta["loadavg_start"])
  rows, skipped, bounds = [], [], {}
  with tf.device(device):
    for shape in grid:
      logging.info("n=%d r=%d B=%d V=%d [%s]", shape["n"], shape["r"], shape["B"], shape["V"],
                   "+".join(shape["labels"]))
      for method in args.methods:
        spec = estimators_lib.method(method)
        if spec.exact and shape["n"] > args.rtrl_max_n:
          gb = spec.cost(
              estimators_lib.Dims.of_config(args.cell, shape["n"], shape["V"]),
              batch=shape["B"]).state_bytes / 1e9
          skipped.append(dict(method=method, n=shape["n"], labels=shape["labels"],
                              reason=(f"exact RTRL is O(n^4) per step (G holds {gb:.2f} GB at "
                                      f"this shape); only n <= {args.rtrl_max_n} "
                                      "(--rtrl_max_n)")))
          logging.info("  rtrl    skipped (n > %d: O(n^4))", args.rtrl_max_n)
          continue
        rows.append(benchmark_shape(method, shape, args, memory, bounds))
  sweep_key = (args.sweep_rank, args.sweep_batch, args.sweep_vocab)
  slopes = fit_slopes(rows, bounds, args.sizes, sweep_key, args.cell, args.truncation)
  meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
  meta["runtime_s"] = round(time.perf_counter() - start, 1)
  result = {
      "meta": meta,
      "rows": rows,
      "bounds": [dict(zip(("kind_key", "n", "r", "B", "V"), k), **v) for k, v in bounds.items()],
      "skipped": skipped,
      "slopes": slopes,
      "breakdown": {"+".join(r["labels"]): r["breakdown_ms"] for r in rows
                    if "breakdown_ms" in r},
  }
  (out_dir / "benchmark.json").write_text(json.dumps(result, indent=1))
  md = table(rows)
  (out_dir / "benchmark.md").write_text(
      f"Device {device} ({meta['device_name']}), {meta['cpu_count']} CPUs, TF {tf.__version__}; "
      f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end; "
      f"{meta['timing']}; runtime {meta['runtime_s']} s.\n\n{md}\n")
  title = (f"{args.cell}, r={args.sweep_rank}, B={args.sweep_batch}, V={args.sweep_vocab}, "
           f"{device}; load {meta['loadavg_start'][0]}–{meta['loadavg_end'][0]}")
  plot(slopes, out_dir / "benchmark.png", title)
  for s in skipped:
    logging.info("skipped %s n=%d: %s", s["method"], s["n"], s["reason"])
  for name, e in slopes.items():
    if e["slope"] is not None:
      logging.info("slope %s: %.2f (largest two n: %.2f; expected ≈ %s)", name, e["slope"],
                   e["slope_top2"], e["expected"])
  for name, parts in result["breakdown"].items():
    logging.info("breakdown %s: %s", name, ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
  logging.info("wrote benchmark.json, benchmark.md, benchmark.png in %s s", meta["runtime_s"])
  print(md)
  for name in ("benchmark.json", "benchmark.md", "benchmark.png"):
    print(out_dir / name)
  return result


def main(argv):
  tf.get_logger().setLevel("ERROR")   # one tf.function per loop: retracing warnings are noise
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
