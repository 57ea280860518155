"""The cells and the model as Keras objects: the RNN-cell protocol, .keras round trips.

The cells follow Keras 3's cell protocol, so ``keras.layers.RNN`` runs them; these tests
check that it computes exactly the cell's own step loop (float64), that models holding
the cells save and load as ``.keras`` with identical predictions, and that
:class:`ok_tf.models.RecurrentModel` does the same with its full cell config.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ok_tf import cells
from ok_tf import evaluation
from ok_tf import models
from ok_tf import specs

import toolkit

NAMES = tuple(cells.CELLS)       # every registered cell


def as_json(config):
  """A config as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(config))


def step_loop(cell, xs, state):
  """The cell's own loop: s_t = cell.step(x_t, s_{t−1}); returns (h_1..h_T, s_T)."""
  outputs = []
  for t in range(xs.shape[1]):
    state = cell.step(xs[:, t], state)
    outputs.append(cell.output(state))
  return np.stack([o.numpy() for o in outputs], axis=1), state.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_keras_rnn_equals_the_cells_loop(name):
  cell = toolkit.make_cell(name, units=5, input_dim=4, seed=3)
  xs = np.random.RandomState(0).normal(size=(3, 9, 4))
  s0 = 0.5 * np.random.RandomState(1).normal(size=(3, cell.state_size))
  rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True, dtype="float64")
  outputs, final = rnn(xs, initial_state=[tf.constant(s0)])
  expected, expected_final = step_loop(cell, tf.constant(xs), tf.constant(s0))
  assert outputs.shape == (3, 9, 5) and final.shape == (3, cell.state_size)
  assert np.max(np.abs(expected)) > 0.1            # the comparison is not between zeros
  assert toolkit.rel_err(outputs.numpy(), expected) < 1e-12
  assert toolkit.rel_err(final.numpy(), expected_final) < 1e-12
  # the cell's own initial state is s_0 = 0
  zero_start, _ = rnn(xs)
  expected_zero, _ = step_loop(cell, tf.constant(xs), cell.zero_state(3))
  assert toolkit.rel_err(zero_start.numpy(), expected_zero) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_cell_protocol(name):
  cell = cells.get(name, 6)
  assert cell.state_size == (2 if name == "lstm" else 1) * 6 and cell.output_size == 6
  cell.build((None, 3))                            # a step input's shape (B, d)
  assert cell.kernel.shape == (3 + 6 + 1, cell.kernel_columns)
  [s0] = cell.get_initial_state(batch_size=2)
  assert s0.shape == (2, cell.state_size) and not np.any(s0.numpy())
  x = tf.ones([2, 3])
  output, [state] = cell(x, [s0])
  np.testing.assert_array_equal(state.numpy(), cell.step(x, s0).numpy())
  np.testing.assert_array_equal(output.numpy(), cell.output(state).numpy())
  with pytest.raises(ValueError, match="known input size"):
    cells.get(name, 6).build((None, None))


@pytest.mark.parametrize("name", NAMES)
def test_models_holding_the_cells_save_and_load(name, tmp_path):
  keras.utils.set_random_seed(5)
  init = keras.initializers.RandomNormal(stddev=0.5, seed=2)
  inputs = keras.Input((None, 3))
  hidden = keras.layers.RNN(cells.get(name, 7, kernel_initializer=init),
                            return_sequences=True)(inputs)
  functional = keras.Model(inputs, keras.layers.Dense(2)(hidden))
  sequential = keras.Sequential([
      keras.Input((None, 3)),
      keras.layers.RNN(cells.get(name, 4, kernel_initializer=init)),
      keras.layers.Dense(2)])
  xs = np.random.RandomState(0).normal(size=(2, 6, 3)).astype(np.float32)
  for i, model in enumerate((functional, sequential)):
    path = tmp_path / f"m{i}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    rnn = [layer for layer in loaded.layers if isinstance(layer, keras.layers.RNN)][0]
    assert type(rnn.cell) is cells.CELLS[name]
    before, after = model.predict(xs, verbose=0), loaded.predict(xs, verbose=0)
    assert np.max(np.abs(before)) > 1e-3
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_model_round_trips(name, tmp_path):
  keras.utils.set_random_seed(6)
  model = models.RecurrentModel(name, 5, 11, init_stddev=0.4)
  assert model.built and model.cell.built and model.cell.input_dim == 11
  ids = np.random.RandomState(2).randint(0, 11, size=(3, 8))
  logits = model.predict(ids, verbose=0)
  assert logits.shape == (3, 8, 11)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert isinstance(loaded, models.RecurrentModel) and loaded.cell_name == name
  assert as_json(loaded.get_config()) == as_json(model.get_config())
  np.testing.assert_array_equal(loaded.predict(ids, verbose=0), logits)
  # a model made from the saved config alone has the cell's initialiser (stddev 0.4)
  fresh = models.RecurrentModel.from_config(model.get_config())
  assert 0.3 < float(np.std(fresh.cell.kernel.numpy())) < 0.5


def test_leaky_alpha_survives_a_keras_file(tmp_path):
  keras.utils.set_random_seed(7)
  model = models.RecurrentModel("leaky", 5, 11, init_stddev=0.4, cell_args={"alpha": 0.3})
  ids = np.random.RandomState(3).randint(0, 11, size=(3, 8))
  logits = model.predict(ids, verbose=0)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert loaded.cell_name == "leaky" and loaded.cell.alpha == 0.3
  np.testing.assert_array_equal(loaded.predict(ids, verbose=0), logits)


SPECS = [(specs.Reals(3), specs.Reals(2)), (specs.Reals(5), specs.Classes(7)),
         (specs.Symbols(6), specs.Reals(1)), (specs.Symbols(4), specs.Classes(9))]


@pytest.mark.parametrize("inputs,outputs", SPECS, ids=lambda s: f"{s.kind}{s.size}")
def test_models_of_every_spec_round_trip(inputs, outputs, tmp_path):
  """Real or symbol inputs, class or real outputs: the model is the step loop with the
  readout (float64, 1e-12) and a .keras file gives back the same outputs; its config
  holds the specs (no vocab_size) unless it is a language model's."""
  keras.utils.set_random_seed(10)
  model = models.RecurrentModel("tanh", 4, inputs=inputs, outputs=outputs, init_stddev=0.5,
                                dtype="float64")
  assert model.cell.input_dim == inputs.size and model.y_spec == outputs
  rng = np.random.RandomState(5)
  if isinstance(inputs, specs.Symbols):
    x = rng.randint(0, inputs.size, size=(2, 6))
  else:
    x = rng.standard_normal((2, 6, inputs.size))
  out = model(x).numpy()
  assert out.shape == (2, 6, outputs.size)
  hs, _ = step_loop(model.cell, model.encode(tf.constant(x)), model.cell.zero_state(2))
  assert toolkit.rel_err(out, model.readout(tf.constant(hs)).numpy()) < 1e-12
  config = model.get_config()
  assert ("vocab_size" in config) == (model.vocab_size is not None)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert loaded.x_spec == inputs and loaded.y_spec == outputs
  np.testing.assert_array_equal(loaded(x).numpy(), out)


def test_the_specs_are_checked():
  with pytest.raises(ValueError, match="either vocab_size"):
    models.RecurrentModel("rhn", 4, 5, inputs=specs.Reals(2), outputs=specs.Reals(1))
  with pytest.raises(ValueError, match="both specs"):
    models.RecurrentModel("rhn", 4, inputs=specs.Reals(2))
  with pytest.raises(TypeError, match="outputs must be"):
    models.RecurrentModel("rhn", 4, inputs=specs.Reals(2), outputs=specs.Symbols(3))
  with pytest.raises(ValueError, match="positive integer size"):
    specs.Reals(0)
  assert specs.from_json(specs.to_json(specs.Classes(3)), "outputs") == specs.Classes(3)
  with pytest.raises(ValueError, match="cannot read"):
    specs.from_json({"kind": "classes", "size": 3}, "inputs")


def test_model_call_is_the_step_loop_with_the_readout():
  keras.utils.set_random_seed(7)
  model = models.RecurrentModel("rhn", 4, 6, init_stddev=0.5, dtype="float64")
  ids = np.random.RandomState(3).randint(0, 6, size=(2, 10))
  logits, final = model(ids, return_state=True)
  hs, state = step_loop(model.cell, model.one_hot(ids), model.cell.zero_state(2))
  expected = model.readout(tf.constant(hs)).numpy()
  assert toolkit.rel_err(logits.numpy(), expected) < 1e-12
  assert toolkit.rel_err(final.numpy(), state) < 1e-12
  # feeding the text in two pieces gives the same logits
  first, middle = model(ids[:, :4], return_state=True)
  second = model(ids[:, 4:], initial_state=middle)
  assert toolkit.rel_err(np.concatenate([first, second], 1), logits.numpy()) < 1e-12


def test_keras_bpc_equals_the_evaluator():
  keras.utils.set_random_seed(8)
  model = models.RecurrentModel("rhn", 6, 9, init_stddev=0.5, dtype="float64")
  ids = np.random.RandomState(4).randint(0, 9, size=301)
  got = toolkit.keras_bpc(model, ids, 8)
  assert abs(got - np.log2(9)) > 0.01   # not the untrained log2(V)
  assert got == pytest.approx(evaluation.Evaluator(model, ids, 8).bpc(), rel=1e-12)


def test_each_weight_has_its_own_draw():
  """W, W_out and the bias come from separate N(0, σ²) draws (an unseeded Keras initialiser
  shared between weights would repeat its numbers)."""
  keras.utils.set_random_seed(9)
  model = models.RecurrentModel("rhn", 6, 7)
  w, w_out, bias = (v.numpy().ravel() for v in model.weights)
  assert not np.allclose(w[:w_out.size], w_out) and not np.allclose(w_out[:bias.size], bias)
  assert abs(np.corrcoef(w[:w_out.size], w_out)[0, 1]) < 0.5
  for v in (w, w_out):
    assert 0.005 < v.std() < 0.02


def test_a_cell_that_does_not_fit_the_model_is_refused():
  built = cells.get("rhn", 4)
  built.build((None, 10))
  with pytest.raises(ValueError, match="inputs have width 12"):
    models.RecurrentModel(built, vocab_size=12)
  with pytest.raises(ValueError, match="same dtype"):
    models.RecurrentModel(cells.get("rhn", 4, dtype="float64"), vocab_size=12)
  model = models.RecurrentModel(cells.get("lstm", 4), vocab_size=12)   # unbuilt: built for V
  assert model.cell.input_dim == 12 and model.units == 4
