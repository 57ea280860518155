"""Speed and memory of the online training step of every method, against its bound.

    python analysis/benchmark.py [--methods=ok,uoro,rtrl,tbptt] [--configs=copy,ptb]
        [--sizes=32,64,128,256] [--steps=0] [--min_time=3] [--repeats=3]
        [--out_dir=benchmark_out/] [--device=auto|cpu|gpu] [--no-breakdown]
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
the machine's load affects them alike:

* ``full``: the whole online training step, ``OnlineTrainer.run(N)`` (data, reset,
  estimator step, readout, loss, exact readout gradient, recurrent gradient, clipping,
  Adam); for ``tbptt`` ``TBPTTTrainer.run(N)``: N characters per stream (N/T windows,
  one Adam update each), so its "step" is one character;
* ``estimator``: the bare ``est.step`` in a loop (state carried in variables), so that
  the step splits into the estimator and the rest (``--estimator``: at the named
  configurations by default, ``all`` for every shape);
* ``bound``: the method's dominant product alone in a loop of the same shapes:
  ``tf.matmul(H[:, None], A)`` with H ``[B, S, S]`` and A ``[B, r, S, k·n]`` (what the
  library computes) for ok / kf_avg / kf, ``H_t G`` with G ``[B, S, a·k·n]`` for rtrl;
  uoro and tbptt have no such product (their cost is O(n²) per step).

With ``--breakdown`` (default), OK at the named configurations is also split: the
cell linearisation (``cell.linearize`` + ``cell.d_diagonals``), the H·A products (the
bound), ``kronecker.ok_reduce_structured`` (what ``OK.step`` runs) and,
outside ``est.step``, ``est.reset`` (timed with no stream resetting: what 99 of 100
PTB steps cost, the ``tf.cond`` that skips the ``tf.where``) and ``est.gradient``;
``--fine_breakdown`` splits ``ok_reduce`` further (Gram matrix
and eigh of the right family, the mixing matmul, the small SVD/eigh work).  Each part
runs alone in its own loop (runs of at least ``--breakdown_min_time`` = 1 s, best of
``--repeats``), so the parts need not add up exactly to the whole.

Peak memory (see :class:`MemoryMeter`): ``peak_mem_bytes`` is the peak of TensorFlow's
allocator (``get_memory_info`` on GPU:0, or on CPU:0, which TF 2.21 supports too) over
a few steps of the full step after its compile, with only the trainer alive (the
previous rows are freed first; ``mem_baseline_bytes`` is what the allocator still held
before the row was built, as TF keeps about one state size per deleted online trainer,
and ``peak_mem_above_baseline_bytes`` the difference).  On CPU also ``peak_rss_bytes``, the process's peak RSS over
the same steps, which counts the TF runtime and memory the C allocator keeps from
earlier rows and so hardly measures one row.
``state_mb`` is the exact size of the method's approximation state.

Outputs in ``--out_dir``: ``benchmark.json`` (every number, the flags, the device, the
load average), ``benchmark.md`` (the table) and ``benchmark.png`` (log-log time per
step against n on the sweep with least-squares slopes; expected at large n: OK ≈ 3,
exact RTRL ≈ 4, UORO and TBPTT ≈ 2; smaller where fixed per-step costs dominate).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import pathlib
import platform
import resource
import sys
import time

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # pylint: disable=g-import-not-at-top
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from ok_tf import estimators as estimators_lib  # pylint: disable=g-import-not-at-top
from ok_tf import kronecker  # pylint: disable=g-import-not-at-top
from ok_tf import models  # pylint: disable=g-import-not-at-top
from ok_tf import training  # pylint: disable=g-import-not-at-top

# The two published configurations (docs/protocol.md, "The published configurations and
# results"): RHN cells, one-hot inputs.
CONFIGS = {
    "copy": dict(n=128, r=16, B=16, V=4, clip=1.0),
    "ptb": dict(n=256, r=8, B=32, V=50, clip=100.0),
}
DEFAULT_METHODS = ("ok", "uoro", "rtrl", "tbptt")     # of the registry estimators.METHODS
DEFAULT_SIZES = (32, 64, 128, 256)
COLORS = {"ok": "C0", "kf_avg": "C1", "kf": "C5", "uoro": "C2", "rtrl": "C3", "tbptt": "C4",
          "bound": "k"}


# ----------------------------------------------------------------------------- task


class RandomSymbols:
  """Synthetic task: B streams of uniform random symbols.

  The protocol of :mod:`ok_tf.training` (``init``, ``next``, ``observe``,
  ``metrics``); the data costs one small uniform draw per step.  All streams reset
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
    return state + 1, ids[0], ids[1], tf.fill([self.batch_size], reset)

  def observe(self, state, loss_bits):
    del loss_bits
    return state

  def metrics(self, state):
    del state
    return {}


# ----------------------------------------------------------------------------- memory


class MemoryMeter:
  """Peak memory over a stretch of code.

  ``peak_mem_bytes``: the peak of TensorFlow's allocator on the device
  (``tf.config.experimental.get_memory_info(device)['peak']``, reset before; on GPU and,
  in TF 2.21, on CPU too); on CPU also ``peak_rss_bytes``, the process's peak resident
  set size (VmHWM reset through /proc/self/clear_refs, else the lifetime maximum of
  ``resource.getrusage``), which includes the TensorFlow runtime and what the C
  allocator keeps from earlier rows, so it hardly measures one row.
  """

  def __init__(self, device: str):
    self.device = device.strip("/")           # "CPU:0" or "GPU:0"
    self.cpu = self.device.startswith("CPU")
    try:
      tf.config.experimental.get_memory_info(self.device)
      tf.config.experimental.reset_memory_stats(self.device)
      self.tf_stats = True
    except (ValueError, RuntimeError, tf.errors.OpError):
      self.tf_stats = False
    self.rss_resettable = self.cpu and self._reset_rss()
    notes = []
    if self.tf_stats:
      notes.append(f"peak_mem_bytes: TensorFlow allocator peak on {self.device} over a few "
                   "steps of the full step after its compile, only the trainer alive "
                   "(get_memory_info, reset before)")
    if self.cpu:
      notes.append("peak_rss_bytes: process peak RSS over the same steps ("
                   + ("VmHWM reset via /proc/self/clear_refs" if self.rss_resettable else
                      "resource.getrusage lifetime maximum")
                   + "); includes the TF runtime and freed memory the C allocator keeps, "
                   "so it is not a per-row measure")
    self.note = "; ".join(notes)

  @staticmethod
  def _reset_rss() -> bool:
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      return True
    except OSError:
      return False

  def reset(self):
    if self.tf_stats:
      tf.config.experimental.reset_memory_stats(self.device)
    if self.rss_resettable:
      self._reset_rss()

  def _rss(self) -> int:
    if self.rss_resettable:
      with open("/proc/self/status") as f:
        for line in f:
          if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

  def current(self) -> int | None:
    """Bytes held by TensorFlow's allocator now (None without allocator statistics)."""
    if not self.tf_stats:
      return None
    return int(tf.config.experimental.get_memory_info(self.device)["current"])

  def peak(self) -> dict:
    out = {}
    if self.tf_stats:
      out["peak_mem_bytes"] = int(tf.config.experimental.get_memory_info(self.device)["peak"])
    if self.cpu:
      out["peak_rss_bytes"] = self._rss()
      out.setdefault("peak_mem_bytes", out["peak_rss_bytes"])
    return out


# ----------------------------------------------------------------------------- timing


def _timed(run, num) -> float:
  t0 = time.perf_counter()
  run(num)
  return time.perf_counter() - t0


def calibrate(run, min_time: float, steps: int = 0, multiple: int = 1) -> tuple[int, float]:
  """(N, compile seconds): ``run(multiple)`` compiles, then N makes one call ≥ min_time.

  N grows from ``multiple`` until a call takes ≥ max(0.2, min_time / 8) s and is then
  scaled to ``min_time`` (or N = ``steps`` rounded up to a multiple of ``multiple``).
  """
  compile_s = _timed(run, multiple)
  if steps:
    return int(math.ceil(steps / multiple)) * multiple, compile_s
  num = multiple
  target = max(0.2, min_time / 8)
  while True:
    elapsed = _timed(run, num)
    if elapsed >= target:
      break
    factor = 16 if elapsed < target / 16 else math.ceil(1.25 * target / elapsed)
    num = int(math.ceil(num * factor / multiple)) * multiple
  per_step = elapsed / num
  return max(multiple, int(math.ceil(min_time / per_step / multiple)) * multiple), compile_s


def measure_group(runners: dict, min_time: float, repeats: int, steps: int = 0,
                  multiples: dict | None = None) -> dict:
  """Best-of-``repeats`` seconds per step of each ``run(N)`` (which must block).

  The repeats are interleaved (full, estimator, bound, full, ...), so that a change of
  the machine's load during the measurement affects all of them alike.  A run that
  took less than 0.8·``min_time`` (the first calls after the compile can be slow and
  spoil the calibration) has its N scaled up and its times restarted (twice at most).
  """
  multiples = multiples or {}
  plan = {name: calibrate(run, min_time, steps, multiples.get(name, 1))
          for name, run in runners.items()}
  nums = {name: p[0] for name, p in plan.items()}
  times = {name: [] for name in runners}
  rescaled = {name: 0 for name in runners}
  while any(len(t) < max(1, repeats) for t in times.values()):
    for name, run in runners.items():
      if len(times[name]) >= max(1, repeats):
        continue
      elapsed = _timed(run, nums[name])
      if not steps and elapsed < 0.8 * min_time and rescaled[name] < 2:
        mult = multiples.get(name, 1)
        nums[name] = int(math.ceil(nums[name] * min_time / elapsed / mult)) * mult
        times[name] = []
        rescaled[name] += 1
        continue
      times[name].append(elapsed)
  out = {}
  for name in runners:
    out[name] = {"steps": nums[name], "times_s": [round(t, 4) for t in times[name]],
                 "sec_per_step": min(times[name]) / nums[name],
                 "compile_s": round(plan[name][1], 3)}
  return out


def loop(body, init_state):
  """A compiled ``run(N)``: N iterations of ``state = body(state)``, state in variables."""
  holder = training.StateVariables(init_state)

  @tf.function
  def compiled(num):
    state = holder.read()
    for _ in tf.range(num):
      state = body(state)
    holder.assign(state)
    return tf.reduce_sum(tf.stack([tf.cast(tf.reduce_sum(t[:1]), tf.float32)
                                   for t in tf.nest.flatten(state)]))

  return lambda num: compiled(tf.constant(num, tf.int32)).numpy()


def orthogonal(batch, size, seed):
  """Random orthogonal [batch, size, size] matrices (products keep their norm)."""
  q, _ = tf.linalg.qr(tf.random.stateless_normal([batch, size, size], [seed, 1]))
  return q


def bound_runner(kind: str, cell, rank: int, batch: int):
  """The dominant product alone: ``A ← H[:, None] A`` (ok) or ``G ← H G`` (rtrl)."""
  s = cell.state_size
  h = orthogonal(batch, s, 1)
  if kind == "ha":
    a = tf.random.stateless_normal([batch, rank, s, cell.kernel_columns], [2, 1])
    return loop(lambda a: tf.matmul(h[:, None], a), a)
  if kind == "hg":
    g = tf.random.stateless_normal([batch, s, cell.hhat_size * cell.kernel_columns], [2, 1])
    return loop(lambda g: tf.matmul(h, g), g)
  raise ValueError(kind)


def estimator_runner(est, model, batch: int, seed: int = 0):
  """The bare ``est.step`` on random one-hot inputs, its state carried in variables."""
  rng = training.make_generator(seed, 2)
  vocab = model.vocab_size

  def body(state):
    ids = rng.uniform([batch], 0, vocab, dtype=tf.int32)
    return est.step(state, model.one_hot(ids), rng)

  return loop(body, est.init(batch))


def breakdown_runners(est, model, batch: int, seed: int = 0, fine: bool = False) -> dict:
  """Loops timing the parts of OK's step and gradient one at a time (dependencies carried)."""
  cell = model.cell
  rank = est.rank
  s, a, cols = cell.state_size, cell.hhat_size, cell.kernel_columns
  rng = training.make_generator(seed, 3)
  vocab = model.vocab_size
  h0 = tf.random.stateless_uniform([batch, s], [3, 1], -0.5, 0.5)
  x0 = model.one_hot(tf.random.stateless_uniform([batch], [4, 1], 0, vocab, dtype=tf.int32))
  probe = cell.linearize(x0, h0)

  def linearize(carry):
    h, _, _ = carry
    ids = rng.uniform([batch], 0, vocab, dtype=tf.int32)
    st = cell.linearize(model.one_hot(ids), h)
    return st.state, st.jacobian, cell.d_diagonals(st.gates).values

  hhat = probe.hhat
  diagonals = cell.d_diagonals(probe.gates)           # D_t, sparse (S·k non-zeros)
  balance = getattr(est, "balance", True)

  def reduce(carry):
    u, af = carry
    left = tf.concat([u, hhat[:, None, :]], axis=1)
    red = kronecker.ok_reduce_structured(left, af, diagonals, rank, rng, balance=balance)
    return red.left, red.right

  u0 = tf.random.stateless_normal([batch, rank, a], [5, 1])
  a0 = tf.random.stateless_normal([batch, rank, s, cols], [6, 1]) * 0.1
  fixed = training.StateVariables(est.init(batch)._replace(u=u0, a=a0))

  def gradient(acc):
    dl_ds = rng.normal([batch, s])
    return acc + est.gradient(fixed.read(), dl_ds)[0]

  def reset(state):   # what the trainer does every step; a mask TF cannot fold (all False)
    return est.reset(state, rng.uniform([batch]) < 0.0)

  runners = {
      "linearize": loop(linearize, (h0, probe.jacobian, diagonals.values)),
      "ok_reduce": loop(reduce, (u0, a0)),
      "gradient": loop(gradient, tf.zeros([a, cols])),
      "reset": loop(reset, fixed.read()),
  }
  if fine:
    q = rank + 1
    family = training.StateVariables(a0)      # the r dense right factors H·A_i, [B, r, S, kn]
    left0 = tf.concat([u0, hhat[:, None, :]], axis=1)
    mix = orthogonal(batch, q, 7)

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

    runners.update({"gram_eigh": loop(gram_eigh, tf.zeros([])[None]),
                    "mixing": loop(mixing, family.read()),
                    "small": loop(small, tf.zeros([batch]))})
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
  """The dominant product of ``method``: "ha" (H·A_i) for the Kronecker sums, "hg" (H·G)
  for exact RTRL, None for the others."""
  spec = estimators_lib.method(method)
  if issubclass(spec, estimators_lib.KroneckerSum):
    return "ha"
  return "hg" if spec is estimators_lib.RTRL else None


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


def benchmark_shape(method, shape, args, memory, bounds, log):
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
  compile_s = _timed(run, multiples["full"])
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
  breakdown = method == "ok" and args.breakdown and named
  if breakdown:
    runners.update(breakdown_runners(est, model, shape["B"], fine=args.fine_breakdown))
  main_runners = {k: v for k, v in runners.items() if k in ("full", "estimator", "bound")}
  res = measure_group(main_runners, args.min_time, args.repeats, args.steps, multiples)
  parts = {k: v for k, v in runners.items() if k not in main_runners}
  if parts:
    res.update(measure_group(parts, args.breakdown_min_time, args.repeats, args.steps))
  load = round(os.getloadavg()[0], 2)
  full = res["full"]
  row.update(steps=full["steps"], times_s=full["times_s"], compile_s=round(compile_s, 3),
             loadavg_1m=load, peak_mem_bytes=peak.get("peak_mem_bytes"),
             peak_rss_bytes=peak.get("peak_rss_bytes"), mem_baseline_bytes=baseline,
             peak_mem_above_baseline_bytes=(None if baseline is None or "peak_mem_bytes" not in peak
                                            else peak["peak_mem_bytes"] - baseline),
             ms_per_step=1e3 * full["sec_per_step"], steps_per_s=1.0 / full["sec_per_step"])
  log(f"  {method:7s} full      {row['ms_per_step']:10.3f} ms/step  (N={full['steps']}, "
      f"load {load})")
  if "estimator" in res:
    row["estimator_ms"] = 1e3 * res["estimator"]["sec_per_step"]
    row["rest_ms"] = row["ms_per_step"] - row["estimator_ms"]
    log(f"  {method:7s} est.step  {row['estimator_ms']:10.3f} ms/step")
  if "bound" in res:
    flops = bound_flops(kind, cell, rank, shape["B"])
    sec = res["bound"]["sec_per_step"]
    bounds[bound_key] = dict(kind="H·A_i (r products)" if kind == "ha" else "H·G", ms=1e3 * sec,
                             gflops=flops / 1e9, gflop_per_s=flops / sec / 1e9, loadavg_1m=load)
    log(f"  {'bound':7s} {kind}        {1e3 * sec:10.3f} ms/step  "
        f"({flops / sec / 1e9:.1f} GFLOP/s)")
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
      log(f"  ok      {name:10s}{ms:10.3f} ms/step")
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


def fit_slopes(rows, bounds, sizes, sweep_key, cell: str = "rhn", truncation: int = 25
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
    color = COLORS.get(name, COLORS["bound"] if name.startswith("bound") else None)
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
  head = ("| shape | method | n | r | B | ms/step | steps/s | est.step ms | rest ms | bound ms "
          "| ratio to bound | TF peak MB (above baseline) | RSS MB | state MB | load 1m |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    lines.append(
        f"| {'+'.join(r['labels'])} | {estimators_lib.label(r['method'], r['r'], r['T'])} "
        f"| {r['n']} | {_fmt(r['r'], 'd') if r['r'] else '—'} | {r['B']} "
        f"| {r['ms_per_step']:.2f} | {r['steps_per_s']:.1f} | {_fmt(r.get('estimator_ms'))} "
        f"| {_fmt(r.get('rest_ms'))} | {_fmt(r.get('bound_ms'))} "
        f"| {_fmt(r.get('ratio_to_bound'))} | {_mb(r.get('peak_mem_bytes'))} "
        f"({_mb(r.get('peak_mem_above_baseline_bytes'))}) "
        f"| {_mb(r.get('peak_rss_bytes'))} "
        f"| {r['state_mb']:.2f} | {r['loadavg_1m']} |")
  return "\n".join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  csv = lambda s: [x for x in s.split(",") if x]
  p.add_argument("--methods", type=csv, default=list(DEFAULT_METHODS),
                 help=f"comma list of {', '.join(estimators_lib.METHODS)}")
  p.add_argument("--configs", type=csv, default=list(CONFIGS),
                 help="comma list of copy, ptb or n:r:B:V ('' for none)")
  p.add_argument("--sizes", type=lambda s: [int(x) for x in csv(s)], default=list(DEFAULT_SIZES),
                 help="n sweep (at --sweep_rank, --sweep_batch, --sweep_vocab; '' for none)")
  p.add_argument("--sweep_rank", type=int, default=CONFIGS["copy"]["r"])
  p.add_argument("--sweep_batch", type=int, default=CONFIGS["copy"]["B"])
  p.add_argument("--sweep_vocab", type=int, default=CONFIGS["copy"]["V"])
  p.add_argument("--steps", type=int, default=0,
                 help="steps per timed run (0: enough for --min_time seconds)")
  p.add_argument("--min_time", type=float, default=3.0, help="seconds per timed run (at least)")
  p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
  p.add_argument("--truncation", type=int, default=25, help="T of tbptt")
  p.add_argument("--reset_every", type=int, default=100,
                 help="the synthetic streams reset every this many steps (0: never)")
  p.add_argument("--cell", default="rhn", choices=("rhn", "tanh", "lstm"))
  p.add_argument("--rtrl_max_n", type=int, default=64,
                 help="exact RTRL only up to this n (its step is O(n^4))")
  p.add_argument("--out_dir", default="benchmark_out/")
  p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
  p.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                 help="split OK's step into its parts at the named configs")
  p.add_argument("--breakdown_min_time", type=float, default=1.0,
                 help="seconds per timed run of each part of the breakdown (at least)")
  p.add_argument("--fine_breakdown", action=argparse.BooleanOptionalAction, default=False,
                 help="with --breakdown, also split ok_reduce (Gram+eigh, mixing, SVD)")
  p.add_argument("--estimator", default="configs", choices=("configs", "all", "none"),
                 help="where to also time the bare est.step: at the named configurations "
                      "(default), at every shape, or nowhere")
  p.add_argument("--bound", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the bound (the dominant product alone)")
  args = p.parse_args(argv)
  bad = [m for m in args.methods if m not in estimators_lib.METHODS]
  if bad:
    p.error(f"unknown method(s) {bad}; choose from {', '.join(estimators_lib.METHODS)}")
  return args


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


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


def main(argv=None) -> dict:
  args = parse_args(argv)
  start = time.perf_counter()
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  device = _select_device(args.device)
  gpu = device.startswith("/GPU")
  memory = MemoryMeter(device)

  def log(msg):
    print(msg, flush=True)

  grid = build_grid(args.configs, args.sizes, args.sweep_rank, args.sweep_batch,
                    args.sweep_vocab)
  meta = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "device": device,
      "device_name": (tf.config.experimental.get_device_details(
          tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU") if gpu
                      else cpu_name()),
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
  log(f"device {device} ({meta['device_name']}), {meta['cpu_count']} CPUs, TF {tf.__version__}, "
      f"load average {meta['loadavg_start']}")
  rows, skipped, bounds = [], [], {}
  with tf.device(device):
    for shape in grid:
      log(f"n={shape['n']} r={shape['r']} B={shape['B']} V={shape['V']} "
          f"[{'+'.join(shape['labels'])}]")
      for method in args.methods:
        if method == "rtrl" and shape["n"] > args.rtrl_max_n:
          gb = estimators_lib.RTRL.cost(
              estimators_lib.Dims.of_config(args.cell, shape["n"], shape["V"]),
              batch=shape["B"]).state_bytes / 1e9
          skipped.append(dict(method=method, n=shape["n"], labels=shape["labels"],
                              reason=(f"exact RTRL is O(n^4) per step (G holds {gb:.2f} GB at "
                                      f"this shape); only n <= {args.rtrl_max_n} "
                                      "(--rtrl_max_n)")))
          log(f"  rtrl    skipped (n > {args.rtrl_max_n}: O(n^4))")
          continue
        rows.append(benchmark_shape(method, shape, args, memory, bounds, log))
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
  log("\n" + md)
  for s in skipped:
    log(f"skipped {s['method']} n={s['n']}: {s['reason']}")
  for name, e in slopes.items():
    if e["slope"] is not None:
      log(f"slope {name}: {e['slope']:.2f} (largest two n: {e['slope_top2']:.2f}; "
          f"expected ≈ {e['expected']})")
  for name, parts in result["breakdown"].items():
    log(f"breakdown {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
  log(f"wrote {out_dir}/benchmark.json, benchmark.md, benchmark.png in {meta['runtime_s']} s")
  return result


if __name__ == "__main__":
  tf.get_logger().setLevel("ERROR")   # one tf.function per loop: retracing warnings are noise
  main()
