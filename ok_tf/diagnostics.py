"""Noise analysis: bias and variance of a gradient estimator against exact RTRL.

On one sequence with fixed weights, exact RTRL gives the true per-step gradient
g_t = dL_t/dW of the recurrent weights (L_t the cross-entropy of the next-character
prediction through the model's readout, so g_t is the real training gradient).  The
estimator runs on the same inputs with a batch of M rows: every row sees the *same*
sequence and makes its *own* random draws, so the M per-row estimates ĝ_{b,t} are M
independent draws of the estimator (docs/algorithms.md §6).  Per row and step:

    relative variance     ‖ĝ_{b,t} − g_t‖² / ‖g_t‖²        (its mean over rows estimates
                                                          E‖ĝ − g‖² / ‖g‖²)
    cosine                ⟨ĝ_{b,t}, g_t⟩ / (‖ĝ_{b,t}‖ ‖g_t‖)
    relative projection   ⟨ĝ_{b,t} − g_t, g_t⟩ / ‖g_t‖²     (mean 0 iff no bias along g)

and per step the bias check of every entry of W: z = (mean_b ĝ_{b,t} − g_t) / (s_b/√M)
(s_b the sample standard deviation over rows).  For OK, the estimator state also gives
per row and step the number m of singular values kept exactly, the step variance (★)
(docs/algorithms.md §4.3), ★/‖C‖²_F, and the mixed share of the singular-value mass s_m/Σσ.

Summaries (:func:`summarize`) average over the steps after a burn-in, the rows and the
sequences.  Rows are independent runs of the estimator, so a row's average over the
measured steps is an independent draw: standard errors come from these (independent
batches of one stream each), and the bias z-score is the mean relative projection over
its standard error.

The exact reference is computed once per (weights, sequence) (:func:`exact_reference`) and
reused for every estimator, which is the same as running exact RTRL beside each of them
(the computation is deterministic) at a fraction of the cost.  Exact RTRL costs
O(S²·a·k·n) = O(n⁴) per step and O(S·a·k·n) = O(n³) memory (:func:`exact_cost`).

Typical use::

    model = models.RecurrentModel("rhn", 64, vocab_size=50, dtype="float64")
    seqs = ptb_sequences(data.train, num=4, length=101, seed=0)
    refs = exact_reference(model, seqs)
    est = estimators.get("ok", model.cell, rank=8)
    result = measure(model, est, seqs, refs, samples=32, burn_in=20, seed=1)
    result.rel_var, result.rel_var_se, result.cosine, result.bias_z, result.ok_kept

Every loop here drives the trainer's own step, :func:`ok_tf.training.estimate` (estimator
step, readout, ∂L_t/∂s_t, gradient), so what is measured is what training computes.
Shadow mode (exact RTRL beside an estimator *during training*, with the chunk-mean cosine
and relative error in metrics.csv; flag ``--shadow_exact``) is :class:`Shadow`, given to
:class:`ok_tf.training.OnlineTrainer`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from ok_tf import cells
from ok_tf import estimators as estimators_lib
from ok_tf import models
from ok_tf import philox
from ok_tf import specs
from ok_tf import training

# ----------------------------------------------------------------------------- costs


def exact_cost(units: int, vocab_size: int, cell: str = cells.default(), dtype="float32",
               steps: int = 1) -> dict:
  """Memory and arithmetic of exact RTRL for one stream (what bounds the noise analysis).

  G_t has S·a·k·n entries (S = state size, a = V + n + 1, k·n columns of W); one step
  multiplies it by H_t (2·S²·a·k·n flops, the exact method's ``cost``).  The step holds
  about three copies of G.

  Returns:
    ``{"entries", "bytes", "gflop_per_step", "gflop"}`` (``gflop`` for ``steps`` steps).
  """
  dims = estimators_lib.Dims.of_config(cell, units, vocab_size)
  entries = dims.state * dims.hhat * dims.columns
  gflop = estimators_lib.method(estimators_lib.EXACT).cost(dims).flops / 1e9
  return {"entries": entries, "bytes": 3 * entries * tf.as_dtype(dtype).size,
          "gflop_per_step": gflop, "gflop": gflop * steps}


def estimator_cost(method: str, units: int, vocab_size: int, rank: int | None = None,
                   samples: int = 1, cell: str = cells.default()) -> float:
  """GFLOP per step of an estimator on ``samples`` rows: the registry's cost model
  (``estimators.METHODS[method].cost``)."""
  dims = estimators_lib.Dims.of_config(cell, units, vocab_size)
  return estimators_lib.method(method).cost(dims, rank, samples).flops / 1e9


# ----------------------------------------------------------------------------- data


def ptb_sequences(ids: np.ndarray, num: int, length: int, seed: int = 0) -> np.ndarray:
  """``num`` windows of ``length`` consecutive ids at random offsets, ``[num, length]``.

  Window i gives ``length − 1`` steps: inputs ``w[:-1]``, targets ``w[1:]``.
  """
  ids = np.asarray(ids, dtype=np.int32)
  if len(ids) < length:
    raise ValueError(f"text of {len(ids)} ids is shorter than one window of {length}")
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, len(ids) - length + 1, size=num)
  return np.stack([ids[s:s + length] for s in starts])


# ----------------------------------------------------------------------------- pieces


class Agreement(NamedTuple):
  """Estimates ĝ_b (rows) against the exact g: ``sq_err`` [B] ‖ĝ_b − g‖², ``cosine`` [B]
  ⟨ĝ_b, g⟩ / (‖ĝ_b‖ ‖g‖), ``g_sq`` [] ‖g‖²."""
  sq_err: tf.Tensor
  cosine: tf.Tensor
  g_sq: tf.Tensor


def agreement(rows: tf.Tensor, exact: tf.Tensor) -> Agreement:
  """:class:`Agreement` of the estimates ``rows`` ``[B, …]`` with ``exact`` ``[…]``."""
  dtype = rows.dtype
  flat = tf.reshape(rows, [tf.shape(rows)[0], -1])
  g = tf.reshape(exact, [-1])
  tiny = tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype)
  g_sq = tf.reduce_sum(tf.square(g))
  sq_err = tf.reduce_sum(tf.square(flat - g[None, :]), axis=-1)
  dot = tf.reduce_sum(flat * g[None, :], axis=-1)
  norms = tf.norm(flat, axis=-1) * tf.sqrt(g_sq)
  return Agreement(sq_err, dot / tf.maximum(norms, tiny), g_sq)


def compare_rows(rows: tf.Tensor, exact: tf.Tensor) -> dict:
  """Per-row errors of estimates ``rows`` ``[B, …]`` against the exact ``exact`` ``[…]``.

  Returns a dict of tensors: ``sq_err`` [B] ‖ĝ_b − g‖², ``cosine`` [B], ``g_sq`` [] ‖g‖²
  (:func:`agreement`), ``proj`` [B] ⟨ĝ_b − g, g⟩/‖g‖², and the entrywise bias check over
  the rows: ``z_sq_sum`` [] Σ z², ``z_count`` [] entries tested, ``z_max`` [] max |z|, where
  z = (mean_b ĝ_b − g)/(s_b/√B) on the entries whose standard error exceeds a rounding
  floor (entries every row gets exactly right, e.g. those of unseen inputs, are skipped).
  """
  dtype = rows.dtype
  batch = tf.shape(rows)[0]
  flat = tf.reshape(rows, [batch, -1])
  g = tf.reshape(exact, [-1])
  tiny = tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype)
  agree = agreement(rows, exact)
  g_sq = agree.g_sq
  proj = tf.reduce_sum((flat - g[None, :]) * g[None, :], axis=-1) / tf.maximum(g_sq, tiny)
  m = tf.cast(batch, dtype)
  mean = tf.reduce_mean(flat, axis=0)
  var = tf.reduce_sum(tf.square(flat - mean[None, :]), axis=0) / tf.maximum(m - 1.0, 1.0)
  se = tf.sqrt(var / m)
  eps = float(np.finfo(dtype.as_numpy_dtype).eps)
  floor = 1e4 * eps * tf.sqrt(g_sq / tf.cast(tf.size(g), dtype))
  tested = se > tf.maximum(floor, tiny)
  z = tf.where(tested, (mean - g) / tf.where(tested, se, 1.0), 0.0)
  return {"sq_err": agree.sq_err, "cosine": agree.cosine, "proj": proj, "g_sq": g_sq,
          "z_sq_sum": tf.reduce_sum(tf.square(z)),
          "z_count": tf.reduce_sum(tf.cast(tested, dtype)),
          "z_max": tf.reduce_max(tf.abs(z))}


class Shadow:
  """Exact RTRL beside an estimator during training (``--shadow_exact``; small nets only).

  :class:`ok_tf.training.OnlineTrainer` calls ``step`` after every online step with the
  step's data and the estimate ĝ_t; exact RTRL runs :func:`ok_tf.training.estimate` on the
  same data and weights and gives g_t, and ``step`` returns its state, the cosine and the
  relative error ‖ĝ_t − g_t‖/‖g_t‖ (float32 scalars) of the whole gradient of W (under a
  strategy, of the replicas' mean gradients: ``mean``).
  """

  def __init__(self, model: models.RecurrentModel):
    self.model = model
    self.exact = estimators_lib.get(estimators_lib.EXACT, model.cell)

  def init(self, batch_size: int):
    return self.exact.init(batch_size)

  def step(self, state, data: training.Data, grads: list, mean=None):
    state, _, exact = training.estimate(self.model, self.exact, state, data, None)
    if mean is not None:   # the replicas' means (ok_tf.sharding.all_mean)
      grads, exact = mean(list(grads)), mean(list(exact))
    rows, g = (tf.concat([tf.reshape(x, [1, -1]) for x in gs], axis=1) for gs in (grads, exact))
    agree = agreement(rows, g[0])
    tiny = np.finfo(rows.dtype.as_numpy_dtype).tiny
    rel_error = tf.sqrt(agree.sq_err[0]) / tf.maximum(tf.sqrt(agree.g_sq), tiny)
    return state, tf.cast(agree.cosine[0], tf.float32), tf.cast(rel_error, tf.float32)


# ----------------------------------------------------------------------------- loops


class Reference(NamedTuple):
  """Exact RTRL along one sequence (numpy): ``grads`` [T, a, k·n] g_t = dL_t/dW,
  ``dl_ds`` [T, S] ∂L_t/∂s_t, ``loss`` [T] cross-entropy in nats."""
  grads: np.ndarray
  dl_ds: np.ndarray
  loss: np.ndarray


def _exact_fn(model: models.RecurrentModel):
  exact = estimators_lib.get(estimators_lib.EXACT, model.cell)

  @tf.function
  def run(ids, targets):
    steps = tf.shape(ids)[0]
    state = exact.init(1)
    out = [tf.TensorArray(exact.dtype, size=steps) for _ in range(3)]
    for t in tf.range(steps):
      data = training.Data(ids[t][None], targets[t][None], tf.zeros([1], tf.bool))
      state, readout, grads = training.estimate(model, exact, state, data, None)
      out = [out[0].write(t, grads[0]), out[1].write(t, readout.dl_ds[0]),
             out[2].write(t, tf.cast(readout.losses[0], exact.dtype))]
    return tuple(o.stack() for o in out)

  return run


def exact_reference(model: models.RecurrentModel, sequences) -> list[Reference]:
  """Exact RTRL on each sequence (rows of ``sequences`` ``[N, T+1]``), from a zero state."""
  run = _exact_fn(model)
  refs = []
  for seq in np.asarray(sequences, np.int32):
    grads, dl_ds, loss = run(tf.constant(seq[:-1]), tf.constant(seq[1:]))
    refs.append(Reference(grads.numpy(), dl_ds.numpy(), loss.numpy()))
  return refs


def _estimator_fn(model: models.RecurrentModel, est: estimators_lib.Estimator,
                  samples: int, rng: tf.random.Generator):
  dtype = est.dtype

  @tf.function
  def run(ids, targets, grads, dl_ds):
    steps = tf.shape(ids)[0]
    state = est.init(samples)
    names = ["sq_err", "cosine", "proj", "g_sq", "z_sq_sum", "z_count", "z_max"]
    own = list(est.diagnostics(state))     # the method's own (OK: its reduction's)
    names += own
    arrays = {k: tf.TensorArray(dtype, size=steps) for k in names}
    for t in tf.range(steps):
      data = training.Data(tf.fill([samples], ids[t]), tf.fill([samples], targets[t]),
                           tf.zeros([samples], tf.bool))
      state, _, _ = training.estimate(model, est, state, data, rng)
      # The reference's ∂L_t/∂s_t (the rows' own equal it up to rounding): ĝ_b − g is
      # then the error of G'_{t,b} alone.
      rows = est.per_example_gradient(state, tf.tile(tf.cast(dl_ds[t][None], dtype),
                                                     [samples, 1]))
      stats = compare_rows(rows, tf.cast(grads[t], dtype))
      stats.update({k: tf.cast(v, dtype) for k, v in est.diagnostics(state).items()})
      arrays = {k: arrays[k].write(t, stats[k]) for k in names}
    return {k: v.stack() for k, v in arrays.items()}

  return run


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class NoiseResult:
  """Noise of one estimator on one network, summarised over sequences, rows and steps.

  Means are over the steps t > ``burn_in`` (1-based), the ``samples`` rows and the
  ``sequences``; ``*_se`` are standard errors from the independent rows (given the
  sequences).  ``per_step`` holds the means over rows and sequences at every step.
  ``ok_*`` are None for methods other than OK.

  Attributes:
    rel_var: E‖ĝ − g‖²/‖g‖², the per-step relative variance, averaged over steps.
    rel_var_pooled: Σ_t E‖ĝ_t − g_t‖² / Σ_t ‖g_t‖² (dominated by the largest gradients).
    cosine: mean cosine between ĝ and g.
    bias_z: z-score of the mean relative projection ⟨ĝ − g, g⟩/‖g‖² (≈ N(0, 1) when
      unbiased; a gradient scaled by c gives a mean of c − 1).
    bias_z_rms: root mean square over entries and steps of the entrywise z-scores of
      mean_b ĝ_b against g (≈ 1 when unbiased, t(M−1) tails: (M−1)/(M−3) in the square).
    bias_z_max: the largest entrywise |z| (grows like √(2 ln #entries) when unbiased).
    ok_kept: mean number m of singular values kept exactly by Opt.
    ok_mixed_share: mean s_m/Σσ, the share of singular-value mass that is mixed.
    ok_step_var_rel: mean (★)/‖C‖²_F, the step's variance relative to the step's sum.
  """
  method: str
  rank: int | None
  units: int
  cell: str
  dtype: str
  samples: int
  sequences: int
  steps: int
  burn_in: int
  rel_var: float
  rel_var_se: float
  rel_var_pooled: float
  cosine: float
  cosine_se: float
  bias_z: float
  bias_z_rms: float
  bias_z_max: float
  grad_norm: float
  loss_bits: float
  ok_kept: float | None = None
  ok_mixed_share: float | None = None
  ok_step_var_rel: float | None = None
  seconds: float = float("nan")
  per_step: dict = dataclasses.field(default_factory=dict, repr=False)

  def row(self) -> dict:
    """The scalar fields, for a CSV row."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name != "per_step"}


def _mean_se(values: np.ndarray) -> tuple[float, float]:
  """Mean over [N sequences, M rows] and its standard error given the sequences."""
  values = np.asarray(values, float)
  mean = float(values.mean())
  m = values.shape[1]
  if m < 2:
    return mean, float("nan")
  var_of_means = values.var(axis=1, ddof=1) / m        # [N]
  return mean, float(math.sqrt(var_of_means.sum()) / values.shape[0])


def summarize(raw: Sequence[dict], refs: Sequence[Reference], *, method: str, rank,
              units: int, cell: str, dtype: str, burn_in: int, seconds=float("nan")
              ) -> NoiseResult:
  """A :class:`NoiseResult` from the per-sequence outputs of the compiled loop.

  Args:
    raw: per sequence, the dict of per-step arrays (``sq_err`` [T, M], ... ).
    refs: the matching exact references.
    burn_in: the first ``burn_in`` steps are left out of the summaries.
  """
  raw = [{k: np.asarray(v, float) for k, v in r.items()} for r in raw]
  steps, samples = raw[0]["sq_err"].shape
  if not 0 <= burn_in < steps:
    raise ValueError(f"burn_in must be in [0, {steps}), got {burn_in}")
  sl = slice(burn_in, None)
  g_sq = np.stack([r["g_sq"] for r in raw])                          # [N, T]
  sq_err = np.stack([r["sq_err"] for r in raw])                      # [N, T, M]
  ratio = sq_err / np.maximum(g_sq, np.finfo(float).tiny)[:, :, None]
  cosine = np.stack([r["cosine"] for r in raw])
  proj = np.stack([r["proj"] for r in raw])
  rel_var, rel_var_se = _mean_se(ratio[:, sl].mean(axis=1))
  cos_mean, cos_se = _mean_se(cosine[:, sl].mean(axis=1))
  proj_mean, proj_se = _mean_se(proj[:, sl].mean(axis=1))
  if proj_se > 0 and math.isfinite(proj_se):
    bias_z = proj_mean / proj_se
  else:
    bias_z = 0.0 if abs(proj_mean) < 1e-10 else math.copysign(math.inf, proj_mean)
  z_sq = sum(r["z_sq_sum"][sl].sum() for r in raw)
  z_count = sum(r["z_count"][sl].sum() for r in raw)
  z_max = max(float(r["z_max"][sl].max()) for r in raw)
  pooled = float(sq_err[:, sl].mean(axis=2).sum() / max(g_sq[:, sl].sum(), 1e-300))
  per_step = {
      "rel_var": ratio.mean(axis=(0, 2)),
      "cosine": cosine.mean(axis=(0, 2)),
      "grad_norm": np.sqrt(g_sq).mean(axis=0),
  }
  ok = {}
  if "kept" in raw[0]:
    kept = np.stack([r["kept"] for r in raw])
    share = np.stack([r["mixed_share"] for r in raw])
    star = np.stack([r["variance"] for r in raw])
    c_sq = np.stack([r["c_norm_sq"] for r in raw])
    star_rel = np.where(c_sq > 0, star / np.where(c_sq > 0, c_sq, 1.0), 0.0)
    per_step.update(kept=kept.mean(axis=(0, 2)), mixed_share=share.mean(axis=(0, 2)),
                    step_variance=star.mean(axis=(0, 2)),
                    step_variance_rel=star_rel.mean(axis=(0, 2)))
    ok = {"ok_kept": float(kept[:, sl].mean()), "ok_mixed_share": float(share[:, sl].mean()),
          "ok_step_var_rel": float(star_rel[:, sl].mean())}
  loss = np.stack([r.loss for r in refs])
  return NoiseResult(
      method=method, rank=rank, units=units, cell=cell, dtype=dtype, samples=samples,
      sequences=len(raw), steps=steps, burn_in=burn_in, rel_var=rel_var,
      rel_var_se=rel_var_se, rel_var_pooled=pooled, cosine=cos_mean, cosine_se=cos_se,
      bias_z=float(bias_z), bias_z_rms=float(math.sqrt(z_sq / z_count)) if z_count else 0.0,
      bias_z_max=z_max, grad_norm=float(np.sqrt(g_sq[:, sl]).mean()),
      loss_bits=float(specs.nats_to_bits(loss[:, sl].mean())), seconds=seconds,
      per_step=per_step, **ok)


def measure(model: models.RecurrentModel, est: estimators_lib.Estimator, sequences,
            refs: Sequence[Reference] | None = None, samples: int = 32, burn_in: int = 20,
            seed: int = 0) -> NoiseResult:
  """Bias and variance of ``est`` against exact RTRL on ``sequences`` ``[N, T+1]``.

  Every sequence starts from a zero state; the estimator runs on ``samples`` rows with
  identical inputs and independent random draws from one Philox generator whose *key*
  is ``seed`` (give different seeds to runs meant to be independent).

  Args:
    model: the network (fixed weights); ``est`` must be built on ``model.cell``.
    est: an estimator (:func:`ok_tf.estimators.get`).
    sequences: int ids, one sequence per row: inputs ``seq[:-1]``, targets ``seq[1:]``.
    refs: :func:`exact_reference` of the same model and sequences (computed if None).
    samples: M, independent estimates per sequence and step.
    burn_in: steps left out of the summaries (the per-step arrays keep them).
    seed: the generator key.
  """
  if est.cell is not model.cell:
    raise ValueError("the estimator must be built on model.cell")
  if int(samples) < 2:
    raise ValueError(f"samples must be ≥ 2 (standard errors), got {samples}")
  sequences = np.asarray(sequences, np.int32)
  if sequences.ndim != 2 or sequences.shape[1] < 2:
    raise ValueError(f"sequences must be [N, T+1] with T ≥ 1, got shape {sequences.shape}")
  if refs is None:
    refs = exact_reference(model, sequences)
  start = time.perf_counter()
  rng = philox.generator(seed)
  run = _estimator_fn(model, est, int(samples), rng)
  raw = []
  for seq, ref in zip(sequences, refs):
    out = run(tf.constant(seq[:-1]), tf.constant(seq[1:]), tf.constant(ref.grads),
              tf.constant(ref.dl_ds))
    raw.append({k: v.numpy() for k, v in out.items()})
  seconds = time.perf_counter() - start
  return summarize(raw, refs, method=est.name, rank=est.rank if est.takes_rank else None,
                   units=model.units, cell=model.cell_name, dtype=est.dtype.name,
                   burn_in=burn_in, seconds=seconds)
