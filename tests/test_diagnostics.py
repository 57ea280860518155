"""Tests of ok_tf/diagnostics.py and analysis/noise.py: known answers of the noise analysis.

Exact RTRL against itself and full-rank OK have zero variance; UORO's relative variance is
far above KF-RTRL's; OK(r) is below r-KF-RTRL-AVG; the bias z-score is small for an
unbiased estimator and large for a deliberately scaled one; OK's diagnostics read from its
state equal those from the SVD of C; a tiny run of analysis/noise.py writes its outputs.
Tiny float64 networks (n = 4, V = 5, weights N(0, 0.5²) so the dynamics are not trivial).
"""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ok_tf import diagnostics
from ok_tf import estimators
from ok_tf import kronecker
from ok_tf import models
from ok_tf import philox

UNITS, VOCAB = 4, 5
FULL_RANK = min(VOCAB + UNITS + 1, UNITS * 2 * UNITS)   # min(a, S·k·n) = 10


def make_model(units=UNITS, vocab=VOCAB, stddev=0.5, seed=0, dtype="float64"):
  keras.utils.set_random_seed(seed)
  return models.RecurrentModel("rhn", units, vocab, init_stddev=stddev, dtype=dtype)


@pytest.fixture(scope="module")
def setup():
  model = make_model()
  seqs = np.random.default_rng(0).integers(0, VOCAB, size=(2, 25)).astype(np.int32)
  return model, seqs, diagnostics.exact_reference(model, seqs)


def run(setup, name, rank=None, samples=32, seed=1, est=None):
  model, seqs, refs = setup
  est = est or estimators.get(name, model.cell, rank=rank)
  return diagnostics.measure(model, est, seqs, refs, samples=samples, burn_in=4, seed=seed)


def test_exact_rtrl_against_itself(setup):
  res = run(setup, "rtrl", samples=4)
  assert res.rel_var < 1e-25 and res.rel_var_se < 1e-25
  assert res.cosine == pytest.approx(1.0, abs=1e-12)
  assert res.bias_z == 0.0 and res.bias_z_rms == 0.0
  assert res.ok_kept is None
  np.testing.assert_allclose(res.per_step["cosine"], 1.0, atol=1e-12)


def test_reference_is_the_readout_gradient(setup):
  """g_t from exact_reference equals autodiff (BPTT) of L_t through the unrolled network."""
  model, seqs, refs = setup
  ids, t = seqs[0], 7
  with tf.GradientTape() as tape:
    state = model.cell.zero_state(1)
    for i in range(t + 1):
      state = model.cell.step(model.one_hot(ids[i:i + 1]), state)
    loss = models.cross_entropy(model.logits(state), ids[t + 1:t + 2])[0]
  grad = tape.gradient(loss, model.cell.kernel)
  np.testing.assert_allclose(refs[0].grads[t], grad.numpy(), rtol=1e-10, atol=1e-13)
  assert refs[0].loss[t] == pytest.approx(float(loss), rel=1e-12)


def test_ok_full_rank_has_zero_variance(setup):
  res = run(setup, "ok", rank=FULL_RANK, samples=4)
  assert res.rel_var < 1e-20
  assert res.cosine == pytest.approx(1.0, abs=1e-10)
  assert res.ok_mixed_share < 1e-6


def test_uoro_far_noisier_than_kf(setup):
  """UORO's noise grows with the state size; at n = 8 it is already ~9× KF-RTRL's."""
  model = make_model(units=8)
  seqs = setup[1]
  refs = diagnostics.exact_reference(model, seqs)
  kf, uoro = [diagnostics.measure(model, estimators.get(name, model.cell), seqs, refs,
                                  samples=32, burn_in=4, seed=seed)
              for name, seed in (("kf", 2), ("uoro", 3))]
  assert uoro.rel_var - 3 * uoro.rel_var_se > 5 * (kf.rel_var + 3 * kf.rel_var_se)
  assert uoro.cosine < kf.cosine


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_ok_below_kf_avg(setup, rank):
  ok, kf_avg = run(setup, "ok", rank, seed=4), run(setup, "kf_avg", rank, seed=5)
  assert ok.rel_var + 3 * ok.rel_var_se < kf_avg.rel_var - 3 * kf_avg.rel_var_se
  assert ok.ok_kept is not None and 0 <= ok.ok_kept <= rank - 1
  assert 0 < ok.ok_mixed_share <= 1
  assert ok.ok_step_var_rel >= 0


class ScaledOK(estimators.OK):
  """A deliberately biased estimator: OK's gradient times 1.2."""

  def per_example_gradient(self, state, dl_ds):
    return 1.2 * super().per_example_gradient(state, dl_ds)

  def gradient(self, state, dl_ds):
    return [1.2 * g for g in super().gradient(state, dl_ds)]


def test_bias_check(setup):
  model = setup[0]
  fair = run(setup, "ok", 2, samples=48, seed=6)
  biased = run(setup, None, samples=48, seed=7, est=ScaledOK(model.cell, 2))
  assert abs(fair.bias_z) < 4.5
  assert 0.6 < fair.bias_z_rms < 1.6
  assert abs(biased.bias_z) > 20
  assert biased.bias_z_rms > 3 and biased.bias_z_max > fair.bias_z_max


def test_deterministic_bias_is_reported(setup):
  """SnAp-1 is deterministic and biased: zero spread over the rows, a non-zero error."""
  res = run(setup, "snap1", samples=2)
  assert res.rel_var_se < 1e-20 and res.rel_var > 1e-6
  assert 0 < res.cosine < 1 and res.ok_kept is None


def test_ok_diagnostics_hook_matches_svd(setup):
  """m, ★, ‖C‖² and s_m/Σσ read from OK's state equal those of the SVD of C."""
  model, seqs, _ = setup
  rng = philox.generator(12)
  ids = np.random.default_rng(1).integers(0, VOCAB, size=(8, 16))
  for rank in (1, 3):
    est = estimators.get("ok", model.cell, rank=rank)
    state = est.init(16)
    for t in range(8):
      x = model.one_hot(ids[t])
      step = model.cell.linearize(x, state.h)     # the r + 1 terms H_t G'_{t−1} + ĥ_t ⊗ D_t
      ha = tf.reshape(tf.matmul(step.jacobian[:, None], state.a), [16, rank, -1])
      d = tf.reshape(model.cell.dense_d(step.gates), [16, 1, -1])
      left = tf.concat([state.u, step.hhat[:, None, :]], 1)
      right = tf.concat([ha, d], 1)
      c = tf.matmul(kronecker.orthonormalize(left).coefficients,
                    kronecker.orthonormalize(right).coefficients, transpose_a=True)
      sigma = tf.linalg.svd(c, compute_uv=False).numpy()
      state = est.step(state, x, rng)
      diag = est.diagnostics(state)      # OK's method hook
      kept = diag["kept"].numpy()
      tail = np.array([s[m:].sum() for s, m in zip(sigma, kept)])
      np.testing.assert_allclose(diag["mixed_share"], tail / sigma.sum(1), atol=1e-12)
      np.testing.assert_allclose(diag["c_norm_sq"], (sigma ** 2).sum(1), rtol=1e-10)
      np.testing.assert_allclose(diag["variance"], kronecker.opt_variance(c, rank),
                                 rtol=1e-8, atol=1e-14)


def test_summarize_and_costs(setup):
  res = run(setup, "kf", samples=8)
  assert res.steps == 24 and res.sequences == 2 and res.samples == 8 and res.burn_in == 4
  assert set(res.per_step) >= {"rel_var", "cosine", "grad_norm"}
  assert res.per_step["rel_var"].shape == (24,)
  assert res.per_step["rel_var"][0] < 1e-20          # KF is exact at the first step
  row = res.row()
  assert row["method"] == "kf" and "per_step" not in row
  with pytest.raises(ValueError, match="samples"):
    run(setup, "kf", samples=1)
  cost = diagnostics.exact_cost(128, 50, "rhn", "float32", steps=10)
  assert cost["entries"] == 128 * 179 * 256
  assert cost["gflop_per_step"] == pytest.approx(2 * 128 * 128 * 179 * 256 / 1e9)
  assert diagnostics.exact_cost(256, 50)["gflop_per_step"] > 12 * cost["gflop_per_step"]
  assert diagnostics.estimator_cost("ok", 64, 50, 8, 32) > diagnostics.estimator_cost(
      "kf", 64, 50, None, 32)


def _fake_run(path, units, steps=(5,), seed=3):
  """A run directory as train_ptb.py writes it: config.json and checkpoints."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(
      {"cell": "rhn", "units": units, "dtype": "float32", "seed": seed, "method": "ok"}))
  model = make_model(units, 50, stddev=0.3, seed=seed + 1, dtype="float32")
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(0))
  manager = tf.train.CheckpointManager(ckpt, str(path / "checkpoints"), max_to_keep=2)
  for s in steps:
    manager.save(checkpoint_number=s)
  tf.train.CheckpointManager(ckpt, str(path / "best"), max_to_keep=1).save(
      checkpoint_number=steps[-1])
  return model


def test_noise_script_tiny(tmp_path):
  from ok_tf.data import ptb  # pylint: disable=g-import-not-at-top
  try:
    ptb.resolve_data_dir(None)
  except FileNotFoundError:
    pytest.skip("PTB character files not available")
  from analysis import common  # pylint: disable=g-import-not-at-top
  from analysis import noise  # pylint: disable=g-import-not-at-top
  _fake_run(tmp_path / "trained", 3, steps=(9,))
  out = tmp_path / "out"
  result = common.run_script(noise, [
      "--sizes=4,64", "--methods=ok:2,kf", "--ranks=1,2", "--rank_units=4",
      "--samples=4", "--sequences=2", "--steps=10", "--burn_in=2", "--budget_gflop=1",
      f"--checkpoint={tmp_path / 'trained'}", f"--training_run={tmp_path / 'trained'}",
      f"--out_dir={out}"])
  for name in ("noise_size", "noise_rank", "noise_ok"):
    for ext in ("png", "pdf"):
      assert (out / f"{name}.{ext}").stat().st_size > 1000
  with open(out / "noise.csv") as f:
    rows = list(csv.DictReader(f))
  measured = [r for r in rows if r["status"] == "measured"]
  skipped = [r for r in rows if r["status"] == "skipped"]
  assert {r["units"] for r in skipped} == {"64"}          # over --budget_gflop=1
  assert all("budget_gflop" in r["note"] for r in skipped)
  assert {(r["sweep"], r["method"]) for r in measured} >= {
      ("size", "ok"), ("size", "kf"), ("rank", "ok"), ("rank", "kf_avg"), ("training", "ok")}
  assert {r["checkpoint_step"] for r in measured if r["sweep"] == "training"} == {"0", "9"}
  assert any(r["condition"].startswith("trained") for r in measured if r["sweep"] == "size")
  for r in measured:
    assert float(r["rel_var"]) >= 0 and -1 <= float(r["cosine"]) <= 1
  assert "skipped" in (out / "noise_table.md").read_text()
  assert (out / "noise_steps.csv").stat().st_size > 0
  assert result["seconds"] > 0
