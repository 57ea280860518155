"""Every estimator's bare step beside its bound and its memory floor, and over sequences.

    python -m analysis.estimator_steps [--methods=ok,kf_avg,kf,uoro,snap1,rtrl]
        [--cell=tanh] [--sizes=64,128] [--batches=1,16] [--rank=8] [--input_dim=1]
        [--seq_len=50] [--min_time=1] [--repeats=3] [--threads=0]
        [--out=estimator_steps.json]

Where analysis/benchmark.py times the whole training step of RHN networks on symbols, this
script times the estimators alone, as a user of ``ok_tf.estimators`` drives them: a cell
(``--cell``, tanh by default) on real-valued inputs x_t ``[B, --input_dim]``, at every
n of ``--sizes`` and B of ``--batches``.  For every estimator it times, each in its own
compiled loop (``timing.loop``), all estimators of one (n, B) interleaved in one group
(``timing.measure_group``: best of ``--repeats`` runs of at least ``--min_time`` s, so a
change of the machine's load affects them alike):

* ``step``: the bare ``est.step``, its state carried from step to step (one fixed input);
* ``bound``: the dominant product alone, as the benchmark's (``benchmark.bound_runner``):
  H_t·A_i (r products) for ok, kf_avg and kf, H_t·G for exact RTRL; none for uoro and
  snap1, whose steps are O(n²) per stream;
* ``floor``: one read and one write of the estimator's whole state (every field times a
  constant), the memory traffic no step can avoid;
* for snap1 also its two stages alone: ``linearize_blocks`` (the cell's step with H_t's
  unit blocks) and ``update`` (``SnAp1.update``: J_t from J_{t−1}, elementwise);
* ``sequence``: ``estimators.run_sequence`` over ``--seq_len`` steps (step, a softmax
  readout of h_t with its cross-entropy, ∂L/∂s_t from a tape, ``est.gradient``, the sum),
  per step;
* ``python_loop``: the same work as one compiled call per step from a Python loop
  (``tf.function`` of step + readout + gradient), per step: what ``sequence`` saves.

``--threads=1`` runs TensorFlow on one thread (intra- and inter-op), which makes the
ratios steadier on a machine shared with other work.  Prints one Markdown table (step / bound and step / floor as ratios; python_loop /
sequence) and writes every number, the machine and the load to ``--out``.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from analysis import benchmark  # pylint: disable=g-import-not-at-top
from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import tables  # pylint: disable=g-import-not-at-top
from analysis import timing  # pylint: disable=g-import-not-at-top
from ok_tf import cells  # pylint: disable=g-import-not-at-top
from ok_tf import estimators  # pylint: disable=g-import-not-at-top
from ok_tf import training  # pylint: disable=g-import-not-at-top

READOUT_CLASSES = 16     # the softmax readout of the sequence loops


def floor_runner(state):
  """One read and one write of every field of ``state`` per iteration."""
  def touch(t):
    return t * tf.constant(1.0001, t.dtype) if t.dtype.is_floating else t + 1
  return timing.loop(lambda s: tf.nest.map_structure(touch, s), state)


def step_runner(est, batch: int, input_dim: int, seed: int = 0):
  """The bare ``est.step``, its state carried in variables, on one fixed normal input (so
  that the loop times the estimator, not the making of its input)."""
  rng = training.make_generator(seed, 2)
  x = tf.Variable(tf.random.stateless_normal([batch, input_dim], [seed, 2], dtype=est.dtype),
                  trainable=False)
  return timing.loop(lambda s: est.step(s, x, rng), est.init(batch))


def snap1_stage_runners(est, batch: int, input_dim: int, seed: int = 0) -> dict:
  """SnAp-1's stages alone: ``cell.linearize_blocks`` (s_t carried, the rest summed into
  it so that nothing is pruned) and ``est.update`` on a fixed step."""
  rng = training.make_generator(seed, 3)
  cell = est.cell

  def linearize(h):
    st = cell.linearize_blocks(rng.normal([batch, input_dim], dtype=est.dtype), h)
    small = [tf.reduce_sum(t) for t in (st.hhat, st.gates, st.blocks)]
    return st.state + 1e-30 * tf.add_n(small)

  h0 = tf.random.stateless_uniform([batch, est.state_size], [seed, 6], -0.5, 0.5,
                                   dtype=est.dtype)
  fixed = cell.linearize_blocks(tf.ones([batch, input_dim], est.dtype), h0)
  return {"linearize_blocks": timing.loop(linearize, h0),
          "update": timing.loop(lambda j: est.update(j, fixed), est.init(batch).j)}


class SequenceProblem:
  """Inputs ``[T, B, d]``, targets ``[T, B]`` and a softmax readout of h_t with its
  per-stream cross-entropy (``loss_fn``), for the sequence loops."""

  def __init__(self, cell, batch: int, steps: int, input_dim: int, seed: int = 0):
    self.steps = steps
    self.inputs = tf.random.stateless_normal([steps, batch, input_dim], [seed, 3],
                                             dtype=cell.compute_dtype)
    self.targets = tf.random.stateless_uniform([steps, batch], [seed, 4], 0, READOUT_CLASSES,
                                               dtype=tf.int32)
    self.readout = tf.Variable(tf.random.stateless_normal(
        [cell.units, READOUT_CLASSES], [seed, 5], stddev=0.1, dtype=cell.compute_dtype))
    self.cell = cell

  def loss_fn(self, s, y):
    logits = tf.matmul(self.cell.output(s), self.readout)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)


def sequence_runner(est, problem: SequenceProblem, seed: int = 0):
  """run(N), N a multiple of T: N / T calls of ``estimators.run_sequence``, the state
  carried from call to call."""
  rng = training.make_generator(seed, 4)
  state = [est.init(problem.inputs.shape[1])]

  def run(num):
    for _ in range(num // problem.steps):
      res = estimators.run_sequence(est, state[0], problem.inputs, problem.loss_fn,
                                    problem.targets, rng, [problem.readout])
      state[0] = res.state
    res.grads[0].numpy()

  return run


def python_loop_runner(est, problem: SequenceProblem, seed: int = 0):
  """run(N): N calls from Python of one compiled step + readout + gradient."""
  rng = training.make_generator(seed, 5)
  xs, ys = tf.unstack(problem.inputs), tf.unstack(problem.targets)

  @tf.function
  def one_step(state, x, y):
    state = est.step(state, x, rng)
    with tf.GradientTape() as tape:
      tape.watch(state.h)
      loss = tf.reduce_sum(problem.loss_fn(state.h, y))
    dl_ds, readout_grad = tape.gradient(loss, [state.h, problem.readout])
    return state, est.gradient(state, dl_ds), readout_grad

  state = [est.init(problem.inputs.shape[1])]

  def run(num):
    for t in range(num):
      state[0], grads, _ = one_step(state[0], xs[t % problem.steps], ys[t % problem.steps])
    grads[0].numpy()

  return run


def shape_rows(methods, n: int, batch: int, args) -> list[dict]:
  """Times every method at (n, B), all loops interleaved in one group; one row each."""
  tf.keras.utils.set_random_seed(0)
  cell = cells.get(args.cell, n)
  cell.build((None, args.input_dim))
  problem = SequenceProblem(cell, batch, args.seq_len, args.input_dim)
  runners, multiples, meta = {}, {}, {}
  for method in methods:
    spec = estimators.method(method)
    rank = spec.rank_for(args.rank if spec.takes_rank else None)
    est = estimators.get(method, cell, rank=rank)
    kind = benchmark.bound_kind(method)
    meta[method] = dict(rank=rank, kind=kind, state_bytes=spec.cost(
        estimators.Dims.of(cell), rank, batch).state_bytes)
    runners[f"{method}/step"] = step_runner(est, batch, args.input_dim)
    runners[f"{method}/floor"] = floor_runner(est.init(batch))
    if method == "snap1":
      for name, runner in snap1_stage_runners(est, batch, args.input_dim).items():
        runners[f"snap1/{name}"] = runner
    if kind is not None and f"bound/{kind}/{rank}" not in runners:
      runners[f"bound/{kind}/{rank}"] = benchmark.bound_runner(kind, cell, rank or 1, batch)
    if args.sequence:
      runners[f"{method}/sequence"] = sequence_runner(est, problem)
      multiples[f"{method}/sequence"] = args.seq_len
      runners[f"{method}/python_loop"] = python_loop_runner(est, problem)
  logging.info("n=%d B=%d: timing %d loops", n, batch, len(runners))
  res = timing.measure_group(runners, args.min_time, args.repeats, multiples=multiples)
  load = round(os.getloadavg()[0], 2)
  ms = {name: 1e3 * r["sec_per_step"] for name, r in res.items()}
  rows = []
  for method in methods:
    m = meta[method]
    row = dict(method=method, label=estimators.label(method, m["rank"]), cell=args.cell, n=n,
               B=batch, r=m["rank"], state_mb=m["state_bytes"] / 2**20, loadavg_1m=load,
               step_ms=ms[f"{method}/step"], floor_ms=ms[f"{method}/floor"])
    row["step_over_floor"] = row["step_ms"] / row["floor_ms"]
    if m["kind"] is not None:
      row["bound"] = "H·A_i (r products)" if m["kind"] == "ha" else "H·G"
      row["bound_ms"] = ms[f"bound/{m['kind']}/{m['rank']}"]
      row["step_over_bound"] = row["step_ms"] / row["bound_ms"]
    if method == "snap1":
      row["stages_ms"] = {name: ms[f"snap1/{name}"] for name in ("linearize_blocks", "update")}
    if args.sequence:
      row["sequence_ms"] = ms[f"{method}/sequence"]
      row["python_loop_ms"] = ms[f"{method}/python_loop"]
      row["loop_over_sequence"] = row["python_loop_ms"] / row["sequence_ms"]
    rows.append(row)
    logging.info("  %-12s step %.3f ms, floor %.3f, bound %s", row["label"], row["step_ms"],
                 row["floor_ms"], _fmt(row.get("bound_ms"), ".3f"))
  return rows


def _fmt(x, spec=".2f"):
  return "—" if x is None else format(x, spec)


def table(rows) -> str:
  """Markdown table of the rows."""
  header = ["method", "n", "B", "step ms", "bound", "bound ms", "step / bound", "floor ms",
            "step / floor", "run_sequence ms/step", "Python loop ms/step", "loop / sequence",
            "state MB", "load 1m"]
  cells = ([
      r["label"], r["n"], r["B"], f"{r['step_ms']:.3f}", r.get("bound", "—"),
      _fmt(r.get("bound_ms"), ".3f"), _fmt(r.get("step_over_bound")), f"{r['floor_ms']:.3f}",
      f"{r['step_over_floor']:.2f}", _fmt(r.get("sequence_ms"), ".3f"),
      _fmt(r.get("python_loop_ms"), ".3f"), _fmt(r.get("loop_over_sequence")),
      f"{r['state_mb']:.2f}", r["loadavg_1m"]] for r in rows)
  return tables.markdown(cells, header)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``."""
  fv = flag_values
  flags.DEFINE_list("methods", list(estimators.ESTIMATORS),
                    f"comma list of {', '.join(estimators.ESTIMATORS)}", flag_values=fv)
  flags.DEFINE_enum("cell", "tanh", sorted(cells.CELLS), "the cell", flag_values=fv)
  flags.DEFINE_list("sizes", ["64", "128"], "hidden units n", flag_values=fv)
  flags.DEFINE_list("batches", ["1", "16"], "streams B", flag_values=fv)
  flags.DEFINE_integer("rank", 8, "r of ok and kf_avg", flag_values=fv)
  flags.DEFINE_integer("input_dim", 1, "length of x_t (normal inputs)", flag_values=fv)
  flags.DEFINE_integer("seq_len", 50, "T of the run_sequence calls", flag_values=fv)
  flags.DEFINE_boolean("sequence", True, "also time run_sequence and the Python loop",
                       flag_values=fv)
  flags.DEFINE_float("min_time", 1.0, "seconds per timed run (at least)", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "timed runs; the best is reported", flag_values=fv)
  flags.DEFINE_integer("threads", 0, "TensorFlow's intra- and inter-op threads (0: its default)",
                       flag_values=fv)
  flags.DEFINE_string("out", "estimator_steps.json", "output JSON file", flag_values=fv)
  flags.register_validator(
      "methods", lambda v: all(m in estimators.ESTIMATORS for m in v),
      f"unknown estimator; choose from {', '.join(estimators.ESTIMATORS)}", flag_values=fv)
  for name in ("sizes", "batches"):
    flags.register_validator(name, common.is_int_list, f"--{name} takes integers",
                             flag_values=fv)


def run(flag_values: flags.FlagValues, argv=()) -> dict:
  """Times the estimators at the flags' shapes; returns what ``--out`` holds."""
  if argv:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv)}")
  args = common.flag_namespace(define_flags, flag_values)
  if args.threads:
    try:
      tf.config.threading.set_intra_op_parallelism_threads(args.threads)
      tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:
      logging.warning("TensorFlow is already initialised: --threads=%d has no effect",
                      args.threads)
  out = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
         "device": timing.cpu_name(), "cpu_count": os.cpu_count(),
         "tensorflow": tf.__version__, "python": platform.python_version(),
         "loadavg_start": [round(x, 2) for x in os.getloadavg()], "args": vars(args),
         "rows": []}
  with tf.device("/CPU:0"):
    for n in common.int_list(args.sizes):
      for batch in common.int_list(args.batches):
        out["rows"] += shape_rows(args.methods, n, batch, args)
  out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
  threads = f"{args.threads} thread(s)" if args.threads else "default threads"
  print(f"{args.cell}, input_dim {args.input_dim}, T {args.seq_len}; {out['device']}, "
        f"{out['cpu_count']} CPUs, {threads}; load {out['loadavg_start']} at start, "
        f"{out['loadavg_end']} at end\n")
  print(table(out["rows"]))
  for r in out["rows"]:
    if "stages_ms" in r:
      print(f"\nsnap1 at n {r['n']}, B {r['B']}: cell.linearize_blocks "
            f"{r['stages_ms']['linearize_blocks']:.3f} ms, SnAp1.update "
            f"{r['stages_ms']['update']:.3f} ms, floor {r['floor_ms']:.3f} ms", end="")
  print(f"\n\n{args.out}")
  return out


def main(argv):
  tf.get_logger().setLevel("ERROR")
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
