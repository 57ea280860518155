"""Tests of ok_tf/evaluation.py: BPC against a plain forward pass, stream layout."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ok_tf import evaluation
from ok_tf import models
from ok_tf import specs

VOCAB = 7


def make_model(dtype, seed=0, units=5):
  keras.utils.set_random_seed(seed)
  model = models.RecurrentModel("rhn", units, VOCAB, dtype=dtype)
  rng = np.random.default_rng(seed)
  for v in model.recurrent_variables + model.readout_variables:
    v.assign(0.7 * rng.standard_normal(v.shape))
  return model


def reference_bpc(model, ids):
  """One stream over the whole text with the Keras forward pass: mean CE × log2 e."""
  logits = model(ids[None])
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[1:], logits=logits[0, :-1])
  return float(tf.reduce_mean(tf.cast(ce, tf.float64)).numpy()) / math.log(2.0)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_bpc_equals_forward_pass_for_any_number_of_streams(dtype, rtol):
  ids = np.random.default_rng(1).integers(0, VOCAB, size=41).astype(np.int32)  # 40 predictions
  model = make_model(dtype)
  for streams in (1, 3, 7):  # 3 and 7 do not divide 40: the last stream is padded
    # The reference is S separate one-stream passes over the pieces of the text.
    length = -(-(len(ids) - 1) // streams)
    starts = range(0, len(ids) - 1, length)
    total = 0.0
    for start in starts:
      piece = ids[start:min(start + length, len(ids) - 1) + 1]
      total += reference_bpc(model, piece) * (len(piece) - 1)
    expected = total / (len(ids) - 1)
    got = evaluation.Evaluator(model, ids, streams).bpc()
    assert got == pytest.approx(expected, rel=rtol), streams
  # One stream is the whole text with the state carried throughout.
  assert evaluation.Evaluator(model, ids, 1).bpc() == pytest.approx(
      reference_bpc(model, ids), rel=rtol)


def test_bpc_uses_current_weights_and_carries_state():
  ids = np.random.default_rng(2).integers(0, VOCAB, size=30).astype(np.int32)
  model = make_model("float64", seed=3)
  ev = evaluation.Evaluator(model, ids, 1)
  before = ev.bpc()
  assert before == pytest.approx(reference_bpc(model, ids), rel=1e-12)
  for v in model.recurrent_variables:
    v.assign(v * 0.5)
  after = ev.bpc()
  assert after != before and after == pytest.approx(reference_bpc(model, ids), rel=1e-12)
  # Two streams differ from one: the second starts from a zero state mid-text.
  assert evaluation.Evaluator(model, ids, 2).bpc() != pytest.approx(after, rel=1e-9)


def test_uniform_model_gives_log2_vocab():
  model = make_model("float64")
  for v in model.readout_variables:
    v.assign(tf.zeros_like(v))
  ids = np.arange(20, dtype=np.int32) % VOCAB
  assert evaluation.Evaluator(model, ids, 3).bpc() == pytest.approx(math.log2(VOCAB), rel=1e-12)


@pytest.mark.parametrize("n,streams", [(2, 1), (2, 5), (10, 1), (10, 3), (10, 9), (10, 20),
                                       (41, 7), (100, 8), (101, 8)])
def test_contiguous_streams_cover_every_prediction_once(n, streams):
  ids = np.arange(n, dtype=np.int32)  # distinct symbols: each prediction is identifiable
  inputs, targets, mask = evaluation.contiguous_streams(ids, streams)
  s = min(streams, n - 1)
  length = -(-(n - 1) // s)
  assert inputs.shape == targets.shape == mask.shape == (s, length)
  assert set(np.unique(mask)) <= {0.0, 1.0} and mask.sum() == n - 1
  used = mask.astype(bool)
  # Row-major order of the unmasked slots is the text order: every (input, target) pair
  # (ids[i], ids[i+1]) appears exactly once, and each stream is one contiguous piece.
  np.testing.assert_array_equal(inputs[used], ids[:-1])
  np.testing.assert_array_equal(targets[used], ids[1:])
  # The padding is a suffix of the row-major layout (so each stream is one contiguous
  # piece of the text, and only the last non-empty stream is cut short).
  np.testing.assert_array_equal(mask.ravel(), np.arange(s * length) < n - 1)


def test_contiguous_streams_needs_two_symbols():
  with pytest.raises(ValueError, match="at least two symbols"):
    evaluation.contiguous_streams(np.array([3], np.int32), 2)


@pytest.mark.parametrize("outputs", [specs.Classes(3), specs.Reals(2)], ids=["classes", "reals"])
def test_sequences_weighted_loss_and_accuracy(outputs):
  """evaluate_sequences = the weighted mean of the per-step losses of the model's own
  outputs (each sequence from the zero state), in bits or squared error; batches of any
  size give the same; accuracy counts the weighted argmax hits."""
  keras.utils.set_random_seed(3)
  model = models.RecurrentModel("tanh", 5, inputs=specs.Reals(4), outputs=outputs,
                                init_stddev=0.7, dtype="float64")
  rng = np.random.default_rng(2)
  x = rng.standard_normal((7, 6, 4))
  if outputs.kind == "classes":
    y = rng.integers(0, 3, (7, 6)).astype(np.int32)
  else:
    y = rng.standard_normal((7, 6, 2))
  w = rng.integers(0, 3, (7, 6)).astype(np.float64)
  o = model(x).numpy()
  if outputs.kind == "classes":
    logp = o - np.log(np.exp(o).sum(-1, keepdims=True))
    losses = -np.take_along_axis(logp, y[..., None], -1)[..., 0] / np.log(2.0)
  else:
    losses = ((o - y) ** 2).mean(-1)
  expected = (w * losses).sum() / w.sum()
  for batch in (7, 3):
    got = evaluation.evaluate_sequences(model, x, y, w, batch_size=batch)
    assert got["loss"] == pytest.approx(expected, rel=1e-12)
    assert got["unit"] == outputs.unit
  if outputs.kind == "classes":
    assert got["accuracy"] == pytest.approx((w * (o.argmax(-1) == y)).sum() / w.sum(), rel=1e-12)
  with pytest.raises(ValueError, match="every weight is 0"):
    evaluation.evaluate_sequences(model, x, y, np.zeros_like(w))
