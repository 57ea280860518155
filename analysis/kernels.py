"""The kernels OK's step is made of, each timed alone, with alternative layouts and floors.

    python -m analysis.kernels [--configs=copy,ptb] [--min_time=1] [--repeats=3]
        [--out=kernels.json]

Where analysis/benchmark.py splits the library's step into its parts, this script asks
what each part could cost: for the right family of OK at the named configurations
(float32, S = n, k·n = 2n, N = S·k·n; ``copy``: n 128, r 16, B 16; ``ptb``: n 256, r 8,
B 32) it times, each in its own compiled loop (``timing.loop``, best of
``--repeats`` interleaved runs of at least ``--min_time`` s: ``timing.measure_group``):

* the H·A product as the library computes it (``KroneckerSum.propagate``, the
  benchmark's bound) and as one
  [S × S]·[S × r·k·n] GEMM per stream (the "wide" layout, A stored as [B, S, r·k·n]);
* the right Gram matrix: r × r in the library's [B, r, N] layout, (r+1) × (r+1) (the
  concatenated family of the first version), and r × r in a [B, N, r] layout;
* the mixing A' = M·A: ``tf.matmul`` in [B, r, N] (the library), the same under XLA, and
  in a [B, N, r] layout; D added on its diagonals in place (``kronecker.add_diagonals``);
* the concatenation of the r + 1 terms that ``ok_reduce_structured`` avoids (with the
  Gram matrix that read it: ``concat_gram_r1`` − ``gram_r1`` is the concatenation);
* memory floors: one read of the family (``reduce_sum``) and one read + write (a scale).

A kernel that only reads the family returns a small result that the loop folds into a
scalar carry; one that writes it carries the family itself, so nothing is optimised away.
Prints a Markdown table per configuration and writes every number to ``--out``.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from analysis import benchmark  # pylint: disable=g-import-not-at-top
from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import tables  # pylint: disable=g-import-not-at-top
from analysis import timing  # pylint: disable=g-import-not-at-top
from ok_tf import estimators  # pylint: disable=g-import-not-at-top
from ok_tf import kronecker  # pylint: disable=g-import-not-at-top


def _normal(shape, seed):
  return tf.random.stateless_normal(shape, [seed, 7])


def kernels(n: int, rank: int, batch: int) -> dict:
  """{name: (description, run(N))} for one configuration."""
  s, cols = n, 2 * n
  flat_size = s * cols
  h = timing.orthogonal(batch, s, 1)
  mix = timing.orthogonal(batch, rank, 2)
  fam = _normal([batch, rank, s, cols], 3)
  flat = tf.reshape(fam, [batch, rank, flat_size])
  wide = _normal([batch, s, rank * cols], 4)             # A as [B, S, r·k·n]
  tall = _normal([batch, flat_size, rank], 5)            # A as [B, N, r]
  d = _normal([batch, 1, flat_size], 6)
  diag = kronecker.Diagonals((0, n), (_normal([batch, s], 8), _normal([batch, s], 9)), s, cols)
  loop = timing.loop

  def reading(fn, family):
    """A kernel that reads ``family`` and returns something small: a scalar carry."""
    held = tf.Variable(family, trainable=False)
    return loop(lambda acc: acc + 1e-30 * tf.reduce_sum(fn(held)), tf.zeros([1]))

  @tf.function(jit_compile=True)
  def mix_xla(x):
    return tf.matmul(mix, x)

  return {
      "product": ("H·A_i, broadcast batched matmul [B,1,S,S]·[B,r,S,kn] (library; the bound)",
                  loop(lambda a: estimators.KroneckerSum.propagate(h, a), fam)),
      "product_wide": ("H·A as one [S,S]·[S,r·kn] GEMM per stream (A as [B,S,r·kn])",
                       loop(lambda a: tf.matmul(h, a), wide)),
      "gram_r": ("Gram r×r of [B,r,N] (library, ok_reduce_structured)",
                 reading(lambda x: tf.matmul(x, x, transpose_b=True), flat)),
      "gram_r1": ("Gram (r+1)×(r+1) of the concatenated [B,r+1,N] (first version)",
                  reading(lambda x: tf.matmul(x, x, transpose_b=True),
                          tf.concat([flat, d], axis=1))),
      "gram_tall": ("Gram r×r of [B,N,r] (A as [B,N,r])",
                    reading(lambda x: tf.matmul(x, x, transpose_a=True), tall)),
      "diag_inner": ("⟨H·A_i, D⟩ from D's diagonals (kronecker.diagonals_inner)",
                     reading(lambda x: kronecker.diagonals_inner(x, diag), fam)),
      "mixing": ("A' = M·A, [B,r,r]·[B,r,N] (library)",
                 loop(lambda x: tf.matmul(mix, x), flat)),
      "mixing_xla": ("the same under XLA (jit_compile)", loop(mix_xla, flat)),
      "mixing_tall": ("A' = A·Mᵀ in [B,N,r] (A as [B,N,r])",
                      loop(lambda x: tf.matmul(x, mix, transpose_b=True), tall)),
      "add_diagonals": ("D added on its diagonals in place (kronecker.add_diagonals)",
                        loop(lambda x: kronecker.add_diagonals(x, mix[:, :, 0], diag), fam)),
      "concat_gram_r1": ("the r+1 terms concatenated, then their Gram (the first version)",
                         reading(lambda x: (lambda c: tf.matmul(c, c, transpose_b=True))(
                             tf.concat([x, d], axis=1)), flat)),
      "read_pass": ("floor: one read of the family (reduce_sum)",
                    reading(lambda x: x, flat)),
      "write_pass": ("floor: one read and one write of the family (x·c)",
                     loop(lambda x: x * 1.0001, flat)),
  }


def shape_of(spec: str) -> tuple[int, int, int]:
  """(n, r, B) of ``copy``, ``ptb`` (benchmark.CONFIGS) or ``n:r:B``; ValueError otherwise."""
  if spec in benchmark.CONFIGS:
    cfg = benchmark.CONFIGS[spec]
    return cfg["n"], cfg["r"], cfg["B"]
  n, rank, batch = (int(x) for x in spec.split(":"))
  return n, rank, batch


def _valid_shapes(specs) -> bool:
  try:
    for spec in specs:
      shape_of(spec)
  except ValueError:
    return False
  return True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``."""
  fv = flag_values
  flags.DEFINE_list("configs", ["copy", "ptb"], "comma list of copy, ptb or n:r:B (S = n, k = 2)",
                    flag_values=fv)
  flags.DEFINE_float("min_time", 1.0, "seconds per timed run (at least)", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "timed runs; the best is reported", flag_values=fv)
  flags.DEFINE_string("out", "kernels.json", "output JSON file", flag_values=fv)
  flags.register_validator("configs", _valid_shapes,
                           "--configs takes copy, ptb or n:r:B", flag_values=fv)


def run(flag_values: flags.FlagValues, argv=()) -> dict:
  """Times the kernels at the flags' configurations; returns what ``--out`` holds."""
  if argv:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv)}")
  args = common.flag_namespace(define_flags, flag_values)
  out = {"device": timing.cpu_name(), "cpu_count": os.cpu_count(),
         "tensorflow": tf.__version__, "loadavg_start": list(os.getloadavg()), "configs": {}}
  for spec in args.configs:
    n, rank, batch = shape_of(spec)
    runs = kernels(n, rank, batch)
    logging.info("%s: n %d, r %d, B %d: timing %d kernels", spec, n, rank, batch, len(runs))
    res = timing.measure_group({k: v[1] for k, v in runs.items()}, args.min_time, args.repeats)
    family_mb = batch * rank * 2 * n * n * 4 / 1e6
    rows = {k: 1e3 * res[k]["sec_per_step"] for k in runs}
    out["configs"][spec] = {"n": n, "r": rank, "B": batch, "family_mb": family_mb,
                            "loadavg_1m": os.getloadavg()[0],
                            "ms": rows, "what": {k: v[0] for k, v in runs.items()}}
    print(f"\n{spec}: n {n}, r {rank}, B {batch}; family [B, r, N] = {family_mb:.1f} MB "
          f"(float32); 1-minute load {os.getloadavg()[0]:.2f}\n")
    print(tables.markdown(([k, f"{ms:.2f}", runs[k][0]] for k, ms in rows.items()),
                          ["kernel", "ms", "what"], "lrl"))
  out["loadavg_end"] = list(os.getloadavg())
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
  print(f"\n{args.out}")
  return out


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
