"""Tests of ok_tf/training.py: the readout gradient, TBPTT and online gradients against
autodiff, shadow RTRL, learning the copy task, no retracing between chunks, and the
non-finite loss error."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ok_tf import diagnostics
from ok_tf import estimators
from ok_tf import models
from ok_tf import sharding
from ok_tf import training
from ok_tf.tasks import copy as copy_task

VOCAB = 5
UNITS = 4
BATCH = 3


class ScriptedTask:
  """A deterministic task following the trainers' protocol (init/next/observe/metrics).

  Plays fixed ``inputs``, ``targets`` and ``reset`` arrays (each ``[T, B]``) in a loop;
  records the number of steps taken and the sum of the observed losses.
  """

  def __init__(self, inputs, targets, reset):
    self.inputs = tf.constant(np.asarray(inputs, np.int32))
    self.targets = tf.constant(np.asarray(targets, np.int32))
    self.reset = tf.constant(np.asarray(reset, bool))
    self.length = int(self.inputs.shape[0])

  def init(self, rng):
    del rng
    return {"t": tf.constant(0, tf.int32), "loss_sum": tf.constant(0.0, tf.float32)}

  def next(self, state, rng):
    del rng
    i = state["t"] % self.length
    new = {"t": state["t"] + 1, "loss_sum": state["loss_sum"]}
    return new, training.Data(tf.gather(self.inputs, i), tf.gather(self.targets, i),
                              tf.gather(self.reset, i), tf.ones([self.reset.shape[1]], tf.float32))

  def observe(self, state, loss_bits):
    return {"t": state["t"], "loss_sum": state["loss_sum"] + tf.cast(loss_bits, tf.float32)}

  def metrics(self, state):
    return {"t": state["t"], "loss_sum": state["loss_sum"]}


def scripted_data(steps, batch=BATCH, seed=0, resets=()):
  """Random inputs / targets; reset at step 0 for all streams and at (t, b) in resets."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(0, VOCAB, size=(steps, batch))
  targets = rng.integers(0, VOCAB, size=(steps, batch))
  reset = np.zeros((steps, batch), bool)
  reset[0] = True
  for t, b in resets:
    reset[t, b] = True
  return inputs, targets, reset


def make_model(seed=0, units=UNITS, scale=0.5, dtype="float64"):
  """A tiny RHN model whose weights are large enough for non-trivial gradients."""
  model = models.RecurrentModel("rhn", units, VOCAB, dtype=dtype)
  rng = np.random.default_rng(seed)
  for v in model.recurrent_variables + model.readout_variables:
    v.assign(scale * rng.standard_normal(v.shape))
  return model


def rhn_step(kernel, x, h):
  """The paper's RHN step written out: z = [x, h, 1] W; h' = f h + (1 − f)(2σ(z_c) − 1)."""
  hhat = tf.concat([x, h, tf.ones_like(h[:, :1])], axis=-1)
  z_c, z_f = tf.split(tf.matmul(hhat, kernel), 2, axis=-1)
  f = tf.sigmoid(z_f)
  return f * h + (1.0 - f) * (2.0 * tf.sigmoid(z_c) - 1.0)


def step_loss(model, h, targets):
  """Batch-mean cross-entropy (nats) of the readout [h, 1] W_out."""
  kernel, bias = model.readout_variables
  logits = tf.matmul(h, kernel) + bias
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.constant(targets), logits=logits))


def unrolled_losses(model, inputs, targets, reset, h0=None):
  """Hand-written forward: the per-step batch-mean losses [L_1, ..., L_T] (differentiable)."""
  (kernel,) = model.recurrent_variables
  h = tf.zeros([inputs.shape[1], UNITS], tf.float64) if h0 is None else h0
  losses = []
  for t in range(inputs.shape[0]):
    h = tf.where(tf.constant(reset[t])[:, None], tf.zeros_like(h), h)
    h = rhn_step(kernel, tf.one_hot(inputs[t], VOCAB, dtype=tf.float64), h)
    losses.append(step_loss(model, h, targets[t]))
  return losses, h


def variables(model):
  return model.recurrent_variables + model.readout_variables


def values(model):
  return [v.numpy().copy() for v in variables(model)]


# ----------------------------------------------------------------------------- readout


def test_readout_gradient_is_each_streams_own():
  """dl_ds[b] = ∂L_b/∂s_b of stream b's own loss; the W_out gradient is the batch mean's."""
  model = make_model(seed=6)
  state = tf.constant(np.random.default_rng(6).standard_normal([BATCH, UNITS]))
  targets = tf.constant([1, 4, 0])
  out = models.readout_gradient(model, state, targets)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(state)
    losses = models.cross_entropy(model.logits(state), targets)
    mean = tf.reduce_mean(losses)
    each = [losses[b] for b in range(BATCH)]
  np.testing.assert_allclose(out.losses.numpy(), losses.numpy(), rtol=1e-15)
  for b in range(BATCH):
    own = tape.gradient(each[b], state).numpy()
    assert np.all(np.delete(own, b, axis=0) == 0)
    np.testing.assert_allclose(out.dl_ds.numpy()[b], own[b], rtol=1e-12, atol=1e-15)
  for got, exp in zip(out.grads, tape.gradient(mean, model.readout_variables)):
    np.testing.assert_allclose(got.numpy(), exp.numpy(), rtol=1e-13)


def test_readout_gradient_weighs_each_stream():
  """With step weights w (B = 3, not a power of two): dl_ds[b] = w_b ∂L_b/∂s_b exactly,
  the W_out gradient and the objective are those of L = (1/B) Σ_b w_b L_b; w = 0 gives a
  zero row."""
  model = make_model(seed=7)
  state = tf.constant(np.random.default_rng(7).standard_normal([BATCH, UNITS]))
  targets = tf.constant([2, 0, 3])
  weight = tf.constant([0.5, 0.0, 2.0], tf.float32)
  out = models.readout_gradient(model, state, targets, weight)
  plain = models.readout_gradient(model, state, targets)
  w = weight.numpy().astype(np.float64)
  np.testing.assert_array_equal(out.dl_ds.numpy(), plain.dl_ds.numpy() * w[:, None])
  assert np.all(out.dl_ds.numpy()[1] == 0)
  with tf.GradientTape() as tape:
    objective = tf.reduce_mean(models.cross_entropy(model.logits(state), targets) * w)
  for got, exp in zip(out.grads, tape.gradient(objective, model.readout_variables)):
    np.testing.assert_allclose(got.numpy(), exp.numpy(), rtol=1e-13)
  np.testing.assert_allclose(out.loss.numpy(), objective.numpy(), rtol=1e-15)


# ----------------------------------------------------------------------------- TBPTT


def test_tbptt_window_gradient_equals_autodiff():
  window = 6
  inputs, targets, reset = scripted_data(window, resets=[(3, 1)])
  reset[0] = False  # the window starts from a carried (non-zero) state ...
  reset[0, 2] = True  # ... except stream 2, which starts anew
  model = make_model()
  task = ScriptedTask(inputs, targets, reset)
  h0 = tf.constant(0.3 * np.random.default_rng(5).standard_normal([BATCH, UNITS]))
  with tf.GradientTape() as tape:
    tape.watch(h0)
    total, state, task_state, bits, _ = training.tbptt_window(model, task, h0, task.init(None),
                                                           None, window)
  got, d_h0 = tape.gradient(total, [variables(model), h0])
  with tf.GradientTape() as tape:
    losses, h_final = unrolled_losses(model, inputs, targets, reset, h0)
    expected_total = tf.add_n(losses)
  expected = tape.gradient(expected_total, variables(model))
  np.testing.assert_allclose(total.numpy(), expected_total.numpy(), rtol=1e-12)
  np.testing.assert_allclose(state.numpy(), h_final.numpy(), rtol=1e-12, atol=1e-14)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)
  # Stream 2 resets at the first step: its carried state gets no gradient; the others do.
  d_h0 = d_h0.numpy()
  assert np.all(d_h0[2] == 0) and np.all(np.abs(d_h0[:2]).sum(axis=1) > 0)
  assert int(task_state["t"]) == window
  np.testing.assert_allclose(bits.numpy(), [l.numpy() / math.log(2) for l in losses],
                             rtol=1e-6)


def test_tbptt_run_applies_window_gradient():
  window = 4
  inputs, targets, reset = scripted_data(2 * window, resets=[(2, 0), (5, 2)])
  model = make_model(seed=1)
  before = values(model)
  lr = 0.25
  trainer = training.TBPTTTrainer(model, ScriptedTask(inputs, targets, reset),
                                  keras.optimizers.SGD(lr), BATCH, window)
  out = trainer.run(2 * window)
  # Reference: window 1 at the old weights, window 2 from its (stopped) final state.
  ref = make_model(seed=1)
  with tf.GradientTape() as tape:
    losses1, h = unrolled_losses(ref, inputs[:window], targets[:window], reset[:window])
    total1 = tf.add_n(losses1)
  for v, g in zip(variables(ref), tape.gradient(total1, variables(ref))):
    v.assign_sub(lr * g)
  with tf.GradientTape() as tape:
    losses2, _ = unrolled_losses(ref, inputs[window:], targets[window:], reset[window:],
                                 tf.stop_gradient(h))
    total2 = tf.add_n(losses2)
  for v, g in zip(variables(ref), tape.gradient(total2, variables(ref))):
    v.assign_sub(lr * g)
  for got, exp, old in zip(values(model), values(ref), before):
    assert not np.allclose(got, old)
    np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out["loss_bits"],
                             [l.numpy() / math.log(2) for l in losses1 + losses2], rtol=1e-6)
  assert int(trainer.step.numpy()) == 2 * window and int(out["t"]) == 2 * window


# ----------------------------------------------------------------------------- online


class RecordingOptimizer(tf.Module):
  """Duck-typed optimiser (``build`` / ``apply_gradients``): keeps the last gradients."""

  def build(self, var_list):
    self.last = [tf.Variable(tf.zeros_like(v), trainable=False) for v in var_list]

  def apply_gradients(self, grads_and_vars):
    for slot, (g, _) in zip(self.last, grads_and_vars):
      slot.assign(g)


def test_online_rtrl_one_step_equals_bptt_sgd_step():
  inputs, targets, reset = scripted_data(4)
  model = make_model(seed=2)
  before = values(model)
  lr = 0.5
  trainer = training.OnlineTrainer(model, estimators.get("rtrl", model.cell),
                                   ScriptedTask(inputs, targets, reset),
                                   keras.optimizers.SGD(lr), BATCH)
  out = trainer.run(1)
  ref = make_model(seed=2)
  with tf.GradientTape() as tape:
    losses, _ = unrolled_losses(ref, inputs[:1], targets[:1], reset[:1])
  grads = tape.gradient(losses[0], variables(ref))
  for got, old, g in zip(values(model), before, grads):
    np.testing.assert_allclose(got, old - lr * g.numpy(), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(out["loss_bits"], [losses[0].numpy() / math.log(2)], rtol=1e-6)


def test_online_rtrl_gradients_equal_bptt_at_fixed_weights():
  """With the weights held fixed, the trainer's RTRL gradient of every step is BPTT's."""
  steps = 5
  inputs, targets, reset = scripted_data(steps, seed=3, resets=[(3, 1)])
  model = make_model(seed=3)
  optimizer = RecordingOptimizer()
  trainer = training.OnlineTrainer(model, estimators.get("rtrl", model.cell),
                                   ScriptedTask(inputs, targets, reset), optimizer, BATCH)
  with tf.GradientTape(persistent=True) as tape:
    losses, _ = unrolled_losses(model, inputs, targets, reset)
  for t in range(steps):
    trainer.run(1)
    expected = tape.gradient(losses[t], variables(model))
    for got, exp in zip(optimizer.last, expected):
      np.testing.assert_allclose(got.numpy(), exp.numpy(), rtol=1e-10, atol=1e-13)
  assert trainer.compiled.experimental_get_tracing_count() == 1


def test_shadow_exact_rtrl_agrees_and_kf_does_not():
  steps = 12
  inputs, targets, reset = scripted_data(steps, seed=4)
  results = {}
  for method in ("rtrl", "kf"):
    model = make_model(seed=4)
    trainer = training.OnlineTrainer(model, estimators.get(method, model.cell),
                                     ScriptedTask(inputs, targets, reset),
                                     keras.optimizers.SGD(0.01), BATCH, seed=0,
                                     shadow=diagnostics.Shadow(model))
    out = trainer.run(steps)
    results[method] = (float(out["shadow_cosine"]), float(out["shadow_rel_error"]))
  cos, err = results["rtrl"]
  assert cos == pytest.approx(1.0, abs=1e-6) and err < 1e-6, results
  cos, err = results["kf"]
  assert cos < 0.999 and err > 1e-3, results


# ----------------------------------------------------------------------------- learning


def _train_copy(trainer, max_steps, chunk=500):
  step, level = 0, 1
  while step < max_steps and level < 3:
    out = trainer.run(chunk)
    step += chunk
    level = int(out["level"])
    assert np.all(np.isfinite(out["loss_bits"]))
  return level, step


# The copy-task learning tests stop as soon as level 3 is reached, so a budget far above the
# steps needed costs nothing when they pass. Levels 1 and 2 (lengths 1 and 2) are learnt
# quickly and the steps are set by the EMA (decay 0.999: at least 2600 steps to level 3):
# seeds 0-9, plain and with TF_ENABLE_ONEDNN_OPTS=0 TF_NUM_INTRAOP_THREADS=1, all reach
# level 3 within 3500 steps (OK) and 5000 (TBPTT). The budgets are about 3 times that.


def test_online_ok_learns_copy_task():
  keras.utils.set_random_seed(0)
  task = copy_task.CopyTask(batch_size=16, max_length=16)
  model = models.RecurrentModel("rhn", 16, copy_task.VOCAB_SIZE)
  est = estimators.get("ok", model.cell, rank=4)
  trainer = training.OnlineTrainer(model, est, task, training.make_optimizer(1e-2), 16,
                                   clip_norm=1.0, seed=0)
  level, step = _train_copy(trainer, 10000)
  assert level >= 3, f"level {level} after {step} steps"


def test_tbptt_learns_copy_task():
  # One update per 10 steps.
  keras.utils.set_random_seed(0)
  task = copy_task.CopyTask(batch_size=16, max_length=16)
  model = models.RecurrentModel("rhn", 16, copy_task.VOCAB_SIZE)
  trainer = training.TBPTTTrainer(model, task, training.make_optimizer(1e-2), 16, 10,
                                  clip_norm=1.0, seed=0)
  level, step = _train_copy(trainer, 15000)
  assert level >= 3, f"level {level} after {step} steps"


# ----------------------------------------------------------------------------- compiled loop


@pytest.mark.parametrize("method", ["ok", "tbptt"])
def test_no_retracing_between_chunks(method):
  task = copy_task.CopyTask(batch_size=4, max_length=8)
  model = models.RecurrentModel("rhn", 4, copy_task.VOCAB_SIZE)
  optimizer = training.make_optimizer(1e-3)
  if method == "tbptt":
    trainer = training.TBPTTTrainer(model, task, optimizer, 4, truncation=5)
    chunks = [10, 10, 5]
  else:
    trainer = training.OnlineTrainer(model, estimators.get("ok", model.cell, rank=2), task,
                                     optimizer, 4)
    chunks = [6, 6, 3]
  for n in chunks:
    out = trainer.run(n)
    assert out["loss_bits"].shape == (n,)
  assert trainer.compiled.experimental_get_tracing_count() == 1
  assert int(trainer.step.numpy()) == sum(chunks)


def test_tbptt_rejects_partial_window():
  task = copy_task.CopyTask(batch_size=2, max_length=4)
  model = models.RecurrentModel("rhn", 2, copy_task.VOCAB_SIZE)
  trainer = training.TBPTTTrainer(model, task, training.make_optimizer(1e-3), 2, truncation=5)
  with pytest.raises(ValueError, match="multiple of the truncation 5"):
    trainer.run(7)


def _tiny_trainer(method, optimizer):
  keras.utils.set_random_seed(0)
  task = copy_task.CopyTask(batch_size=4, max_length=8)
  model = models.RecurrentModel("rhn", 4, copy_task.VOCAB_SIZE)
  if method == "tbptt":
    return training.TBPTTTrainer(model, task, optimizer, 4, truncation=1)
  rank = 2 if method == "ok" else None
  return training.OnlineTrainer(model, estimators.get(method, model.cell, rank=rank), task,
                                optimizer, 4)


@pytest.mark.parametrize("method", ["rtrl", "tbptt", "ok"])
def test_non_finite_loss_from_poisoned_weight(method):
  trainer = _tiny_trainer(method, keras.optimizers.SGD(0.1))
  trainer.run(2)
  kernel = trainer.model.recurrent_variables[0]
  kernel.assign(tf.tensor_scatter_nd_update(kernel, [[0, 0]], [np.nan]))
  with pytest.raises(training.NonFiniteLossError) as info:
    trainer.run(3)
  message = str(info.value)
  assert message.startswith("the training loss became nan at step 2:"), message
  assert "--lr" in message and "--clip" in message and "--resume" in message
  assert "\n" not in message


@pytest.mark.parametrize("method", ["rtrl", "tbptt", "ok"])
def test_non_finite_loss_from_huge_learning_rate(method):
  # Plain SGD at 1e38: the readout weights overflow to inf within a few updates.
  trainer = _tiny_trainer(method, keras.optimizers.SGD(1e38))
  with pytest.raises(training.NonFiniteLossError) as info:
    trainer.run(20)
  message = str(info.value)
  assert message.startswith("the training loss became "), message
  step = int(message.split(" at step ")[1].split(":")[0])
  assert 1 <= step < 20  # the first step runs at the initial, finite weights


@pytest.mark.parametrize("method", ["kf", "tbptt"])
def test_published_grad_scale_is_clip_times_batch(method):
  """W's gradient / B with clip c equals the plain gradient with clip c·B (ε ≈ 0).

  clip(g/B, c) = clip(g, c·B)/B and Adam without ε is invariant to the scale of its
  input, so the two trainers reach the same weights (float64); the plain gradient with
  the same clip c does not (the clip binds).
  """
  steps, clip = 12, 0.05
  data = scripted_data(steps, seed=4, resets=[(5, 1)])

  def train(scale, clip_norm):
    model = make_model(seed=2)
    opt = training.make_optimizer(1e-2, epsilon=1e-30)  # ε·B negligible too
    task = ScriptedTask(*data)
    if method == "tbptt":
      trainer = training.TBPTTTrainer(model, task, opt, BATCH, truncation=3, clip_norm=clip_norm,
                                      recurrent_grad_scale=scale)
    else:
      est = estimators.get(method, model.cell)
      trainer = training.OnlineTrainer(model, est, task, opt, BATCH, clip_norm=clip_norm,
                                       recurrent_grad_scale=scale)
    trainer.run(steps)
    return [v.numpy() for v in model.recurrent_variables + model.readout_variables]

  published = train(training.grad_scale_factor("published", BATCH), clip)
  equivalent = train(training.grad_scale_factor("mean", BATCH), clip * BATCH)
  plain = train(1.0, clip)
  for a, b in zip(published, equivalent):  # equal up to rounding (1e-8 after 12 Adam steps)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
  assert max(np.max(np.abs(a - b)) for a, b in zip(published, plain)) > 1e-4  # 1e4 × the rounding


def test_adam_on_gradient_over_batch_is_adam_with_epsilon_times_batch():
  """Adam(g/B, ε) = Adam(g, B·ε): the published scale makes W's ε effectively B·ε."""
  batch, eps = 16, 1e-3
  grads = np.random.default_rng(0).standard_normal((5, 7)) * 1e-2

  def adam(scale, epsilon):
    var = keras.Variable(np.zeros(7), dtype="float64")
    opt = training.make_optimizer(1e-2, epsilon=epsilon)
    for g in grads:
      opt.apply_gradients([(tf.constant(g * scale), var)])
    return var.numpy()

  np.testing.assert_allclose(adam(1.0 / batch, eps), adam(1.0, eps * batch), rtol=1e-12)
  assert np.max(np.abs(adam(1.0 / batch, eps) - adam(1.0, eps))) > 1e-4
  assert training.grad_scale_factor("published", batch) == 1.0 / batch
  assert training.grad_scale_factor("mean", batch) == 1.0
  with pytest.raises(ValueError, match="grad_scale"):
    training.grad_scale_factor("sum", batch)


@pytest.mark.parametrize("dtype, bounds, row", [
    (tf.float32, {}, 3), (tf.float64, {}, 3), (tf.float32, dict(minval=-2.0, maxval=3.0), 1),
    (tf.int32, dict(minval=0, maxval=2), 1), (tf.int64, dict(minval=0, maxval=9), 5)])
def test_sharded_generator_draws_its_rows_of_the_whole_draw(dtype, bounds, row):
  """Replica i of R draws rows i·b … (i+1)·b − 1 of the whole batch's draw (offsets that
  do not start a Philox block, a counter whose low word overflows), computing only those,
  and every replica's generator ends where the whole draw leaves it."""
  batch, count, counter = 6, 3, [-2, 7]  # -2: the low word 2^64 − 2 carries into the high
  whole_rng = tf.random.Generator.from_key_counter(key=5, counter=counter, alg="philox")
  whole = [whole_rng.uniform([batch, row], dtype=dtype, **bounds).numpy() for _ in range(2)]
  shares = [sharding.ShardedGenerator(
      tf.random.Generator.from_key_counter(key=5, counter=counter, alg="philox"), i, count)
      for i in range(count)]
  compiled = tf.function(lambda rng, b: rng.uniform(tf.stack([b, row]), dtype=dtype, **bounds))
  for k, draw in enumerate([lambda rng: rng.uniform([batch // count, row], dtype=dtype, **bounds),
                            lambda rng: compiled(rng, tf.constant(batch // count))]):
    parts = [draw(rng).numpy() for rng in shares]
    np.testing.assert_array_equal(np.concatenate(parts), whole[k])
  for rng in shares:
    np.testing.assert_array_equal(rng.generator.state.numpy(), whole_rng.state.numpy())


def test_one_replica_keeps_the_single_device_checkpoint_layout():
  """Under the default strategy the trainers' checkpoint names its state as a run on one
  device always has (several replicas: ``shards``)."""
  task = copy_task.CopyTask(batch_size=2, max_length=4)
  model = models.RecurrentModel("rhn", 2, copy_task.VOCAB_SIZE)
  online = training.OnlineTrainer(model, estimators.get("kf", model.cell), task,
                                  training.make_optimizer(1e-3), 2,
                                  shadow=diagnostics.Shadow(model))
  tbptt = training.TBPTTTrainer(model, task, training.make_optimizer(1e-3), 2, truncation=2)
  shared = {"model", "optimizer", "step", "data_rng", "method_rng", "task_state"}
  assert set(online.trackables()) == shared | {"estimator_state", "shadow_state"}
  assert set(tbptt.trackables()) == shared | {"hidden"}
  assert isinstance(online.trackables()["data_rng"], tf.random.Generator)
