"""A recurrent model: a cell from :mod:`ok_tf.cells` and a linear readout, for any task.

    s_t = cell(x_t, s_{t−1}),  x_t one-hot ids (symbols) or real vectors (no embedding)
    o_t = [h_t, 1] W_out,  W_out ∈ R^{(n+1) × K}  (a Dense layer with bias)

The input and output specs (:mod:`ok_tf.specs`) fix x_t and the loss: symbols in V
one-hot, reals in d as they are; classes out K with the softmax cross-entropy
L_b = −log softmax(o_t)[y_b] (nats), reals out m with the mean squared error
L_b = (1/m) ‖o_t − y_b‖². A language model has symbols in and classes out of one size V
(``vocab_size``). Both W and W_out are initialised N(0, 0.01²) as in the paper.

The step's objective is L_t = (1/B) Σ_b w_b L_b with the task's step weights w
(:mod:`ok_tf.tasks.base`); the readout's gradients, w_b ∂L_b/∂s_t for every stream and
∂L_t/∂W_out, come from :func:`readout_gradient`, the one place where the trainers and the
diagnostics get them.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from ok_tf import cells
from ok_tf import specs


@keras.saving.register_keras_serializable(package="ok_tf")
class RecurrentModel(keras.Model):
  """Cell + readout, a Keras model that saves and loads as ``.keras``.

      logits = model(ids)              # ids [B, T] int → logits [B, T, V]
      outputs = model(x)               # reals x [B, T, d] → outputs [B, T, K or m]
      model.save("m.keras");  keras.models.load_model("m.keras")

  The weights are made in :meth:`build`, which the constructor calls (the specs fix every
  shape). ``get_config`` holds the cell's full Keras config and the specs, so a model
  round-trips whatever cell and task it has.

  Args:
    cell: a name of :data:`ok_tf.cells.CELLS`, a :class:`ok_tf.cells.KroneckerCell` or a
      cell's serialised Keras config.
    units: n (when ``cell`` is a name; a layer or a config brings its own).
    vocab_size: V, a language model's: symbols in and classes out, both of size V (the
      default when no spec is given: 4, the copy task's).
    init_stddev: standard deviation of the N(0, σ²) initialisation of W_out and its bias,
      and of W when ``cell`` is a name (a layer or a config brings its own initialiser).
    dtype: ``"float32"`` (default) or ``"float64"``; a cell layer must have the same.
    cell_args: the named cell's hyperparameters (e.g. ``{"alpha": 0.5}``), if any.
    inputs: the input spec (:class:`ok_tf.specs.Symbols` or :class:`~ok_tf.specs.Reals`,
      or its JSON dict), instead of ``vocab_size``.
    outputs: the output spec (:class:`ok_tf.specs.Classes` or :class:`~ok_tf.specs.Reals`,
      or its JSON dict), instead of ``vocab_size``.

  Raises:
    ValueError: a cell layer built for another input width, or of another dtype; specs
      and ``vocab_size`` both given, or one spec without the other.
  """

  def __init__(self, cell=cells.default(), units: int = 128, vocab_size: int | None = None,
               init_stddev: float = 0.01, dtype="float32", inputs=None, outputs=None,
               cell_args: dict | None = None, **kwargs):
    super().__init__(dtype=dtype, **kwargs)
    # x_spec: the spec of the inputs x_t; y_spec: of the outputs and targets (ok_tf.specs).
    self.x_spec, self.y_spec = model_specs(vocab_size, inputs, outputs)
    self.vocab_size = language_vocab_size(self.x_spec, self.y_spec)
    self.init_stddev = float(init_stddev)
    # One initialiser object per weight, made in this order (W, W_out, bias): an unseeded
    # Keras initialiser fixes its seed when it is made, so a shared one would draw the same
    # numbers for every weight, and the order fixes the weights under a global seed.
    if isinstance(cell, str):
      cell = cells.get(cell, int(units), dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
                       **(cell_args or {}))
    elif isinstance(cell, dict):
      cell = keras.saving.deserialize_keras_object(cell)
    if not isinstance(cell, cells.KroneckerCell):
      raise TypeError(f"cell must be a name ({', '.join(cells.CELLS)}), a KroneckerCell or "
                      f"its config; got {type(cell).__name__}")
    if cell.built and cell.input_dim != self.x_spec.width:
      raise ValueError(f"the cell was built for inputs of size {cell.input_dim}, but the model's "
                       f"inputs have width {self.x_spec.width} ({self.x_spec}): pass "
                       "an unbuilt cell or the matching inputs")
    if cell.dtype_policy.name != self.dtype_policy.name:
      raise ValueError(f"the cell computes in {cell.dtype_policy.name} and the model in "
                       f"{self.dtype_policy.name}: make both with the same dtype")
    self.cell = cell
    self.units = cell.units
    self.readout = keras.layers.Dense(
        self.y_spec.width,
        kernel_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
        bias_initializer=keras.initializers.RandomNormal(stddev=self.init_stddev),
        dtype=dtype, name="readout")
    self.build((None, None))

  def build(self, input_shape=None):
    """Creates W (the cell's, for inputs of the input spec's width) and W_out
    ``[n + 1, K or m]``."""
    if self.built:
      return
    if not self.cell.built:
      self.cell.build((None, self.x_spec.width))
    self.readout.build((None, self.cell.output_size))
    self.built = True

  @property
  def cell_name(self) -> str:
    """The cell's registry name (``cell_name``), else its class name."""
    names = {cls: name for name, cls in cells.CELLS.items()}
    return names.get(type(self.cell), type(self.cell).__name__)

  @property
  def recurrent_variables(self) -> list:
    """The variables whose gradient the estimators provide (W)."""
    return list(self.cell.trainable_variables)

  @property
  def readout_variables(self) -> list:
    """The readout's variables (exact gradient by ordinary autodiff)."""
    return list(self.readout.trainable_variables)

  def encode(self, inputs):
    """x_t ``[B, width]`` from a step's inputs: one-hot ids, or the reals as they are."""
    return self.x_spec.encode(inputs, self.cell.compute_dtype)

  def one_hot(self, ids):
    """x_t of symbol ids (a language model's :meth:`encode`)."""
    return tf.one_hot(ids, self.x_spec.width, dtype=self.cell.compute_dtype)

  def logits(self, state):
    """o_t = [h_t, 1] W_out from the state s_t: logits (classes) or predictions (reals)."""
    return self.readout(self.cell.output(state))

  def step_losses(self, state, targets):
    """L_b of every stream, ``[B]``: cross-entropy in nats, or the mean squared error."""
    return self.y_spec.losses(self.logits(state), targets)

  def call(self, inputs, initial_state=None, return_state=False):
    """o_t ``[B, T, K or m]`` over ``inputs`` (ids [B, T] int, or reals [B, T, d]), from
    s_0 = ``initial_state`` or 0.

    With ``return_state=True`` returns ``(outputs, s_T)`` so that a long sequence can be
    fed in pieces.
    """
    inputs = tf.convert_to_tensor(inputs)
    batch = tf.shape(inputs)[0]
    state = self.cell.zero_state(batch) if initial_state is None else initial_state
    xs = self.encode(inputs)
    xs = tf.transpose(xs, [1, 0, 2])
    states = tf.scan(lambda s, x: self.cell.step(x, s), xs, initializer=state)
    logits = tf.transpose(self.logits(states), [1, 0, 2])
    return (logits, states[-1]) if return_state else logits

  def get_config(self):
    config = {"cell": keras.saving.serialize_keras_object(self.cell),
              "init_stddev": self.init_stddev, "dtype": self.dtype_policy.name,
              "name": self.name}
    if self.vocab_size is not None:
      config["vocab_size"] = self.vocab_size
    else:
      config.update(inputs=specs.to_json(self.x_spec),
                    outputs=specs.to_json(self.y_spec))
    return config


def model_specs(vocab_size=None, inputs=None, outputs=None):
  """(input spec, output spec) of :class:`RecurrentModel`'s arguments (see there)."""
  if inputs is None and outputs is None:
    size = 4 if vocab_size is None else int(vocab_size)
    return specs.Symbols(size), specs.Classes(size)
  if vocab_size is not None:
    raise ValueError("give either vocab_size (a language model) or the specs inputs= and "
                     "outputs=, not both")
  if inputs is None or outputs is None:
    raise ValueError("give both specs, inputs= and outputs= (ok_tf.specs), or vocab_size")
  if isinstance(inputs, dict):
    inputs = specs.from_json(inputs, "inputs")
  if isinstance(outputs, dict):
    outputs = specs.from_json(outputs, "outputs")
  if not isinstance(inputs, tuple(specs.INPUTS.values())):
    raise TypeError(f"inputs must be ok_tf.specs.Symbols or Reals, got {inputs!r}")
  if not isinstance(outputs, tuple(specs.OUTPUTS.values())):
    raise TypeError(f"outputs must be ok_tf.specs.Classes or Reals, got {outputs!r}")
  return inputs, outputs


def language_vocab_size(inputs, outputs) -> int | None:
  """V when the specs are a language model's (symbols in, classes out, one size), else None."""
  if (isinstance(inputs, specs.Symbols) and isinstance(outputs, specs.Classes)
      and inputs.size == outputs.size):
    return inputs.size
  return None


def cross_entropy(logits, targets):
  """Per-stream softmax cross-entropy in nats, ``[B]``."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


class Readout(NamedTuple):
  """The readout of one step for B streams (:func:`readout_gradient`)."""
  losses: tf.Tensor   # L_b, [B]: nats (classes) or the mean squared error (reals)
  dl_ds: tf.Tensor    # w_b ∂L_b/∂s_t, each stream's own weighted loss, [B, S]
  grads: list         # ∂L_t/∂W_out of L_t = (1/B) Σ_b w_b L_b (kernel, bias)
  loss: tf.Tensor     # [] L_t, the step's objective


def readout_gradient(model: RecurrentModel, state, targets, weight=None) -> Readout:
  """The losses at the states s_t ``[B, S]`` and their gradients, from one tape:

      Σ = Σ_b w_b L_b,   ∂Σ/∂s_b = w_b ∂L_b/∂s_b,   ∂L_t/∂W_out = (1/B) ∂Σ/∂W_out

  (L_b depends on s_b alone, so the gradient of the sum is each stream's own, exact for
  any B; w = ``weight`` ``[B]``, 1 when None.)  ``dl_ds`` is what ``est.gradient`` expects.
  """
  with tf.GradientTape() as tape:
    tape.watch(state)
    losses = model.step_losses(state, targets)
    weighted = losses if weight is None else losses * tf.cast(weight, losses.dtype)
    total = tf.reduce_sum(weighted)
  grads = tape.gradient(total, [state] + model.readout_variables)
  batch = tf.cast(tf.shape(losses)[0], losses.dtype)
  return Readout(losses, grads[0], [g / batch for g in grads[1:]], tf.reduce_mean(weighted))


# ----------------------------------------------------------------------------
# The model of a run directory


def run_model(run, dtype: str | None = None, vocab_size: int | None = None) -> RecurrentModel:
  """A new model of the shape of run ``run`` (an :class:`ok_tf.runs.Run` or its path):
  its cell, units and specs, with fresh weights.

  Args:
    dtype: the model's dtype (default: the run's).
    vocab_size: V of a language model; default the run's ``specs()`` (task.json, else
      vocab.json, else the config's task).

  Raises:
    ValueError: the specs are neither given nor known.
  """
  from ok_tf import runs  # pylint: disable=g-import-not-at-top
  run = run if isinstance(run, runs.Run) else runs.Run(run)
  config = run.config
  dtype = dtype or config.get("dtype", "float32")
  cell, units = config.get("cell", cells.default()), int(config["units"])
  cell_args = cells.hyperparameters(cell, config)    # the cell's own, e.g. leaky_alpha
  if vocab_size:
    return RecurrentModel(cell, units, int(vocab_size), dtype=dtype, cell_args=cell_args)
  found = run.specs()
  if found is None:
    raise ValueError(f"{run.path}: the model's inputs and outputs are unknown (no "
                     "task.json or vocab.json, and the config's task is "
                     f"{config.get('task')!r}): pass vocab_size")
  return RecurrentModel(cell, units, inputs=found[0], outputs=found[1], dtype=dtype,
                        cell_args=cell_args)


def load_run_model(run, which: str | int | None = None, dtype: str | None = None,
                   vocab_size: int | None = None) -> tuple[RecurrentModel, int]:
  """The model of run ``run`` (an :class:`ok_tf.runs.Run` or its path) with the weights of
  one of its checkpoints; returns (model, step). ``ok_tf.load_model``.

  Args:
    which: "best", "latest", a checkpoint's step, None (best if there is one, else
      latest), or "init": the run's initial weights (its config's seed), step 0.
    dtype: the dtype of the returned model (default: the run's); weights are cast.
    vocab_size: V; default the run's (:func:`run_model`).

  Raises:
    FileNotFoundError: the run has no such checkpoint.
    ValueError: V is neither given nor known.
    AssertionError: the checkpoint does not hold this model's weights.
  """
  from ok_tf import runs  # pylint: disable=g-import-not-at-top
  run = run if isinstance(run, runs.Run) else runs.Run(run)
  run_dtype = run.config.get("dtype", "float32")
  if which == "init":
    keras.utils.set_random_seed(int(run.config.get("seed", 0)))
    source, step = run_model(run, run_dtype, vocab_size), 0
  else:
    source = run_model(run, run_dtype, vocab_size)
    prefix, step = run.checkpoint(which)
    status = tf.train.Checkpoint(model=source).restore(prefix)
    status.assert_existing_objects_matched()   # every weight of the model was in it
    status.expect_partial()                    # the rest (optimiser, states) is not needed
  if dtype is None or tf.as_dtype(dtype) == tf.as_dtype(run_dtype):
    return source, step
  model = run_model(run, dtype, vocab_size)
  for target, value in zip(model.weights, source.weights):
    target.assign(tf.cast(value, target.dtype))
  return model, step


def export_run_model(run, which: str | int | None = None, vocab_size: int | None = None):
  """Saves the model of checkpoint ``which`` of run ``run`` (default: best, else latest)
  as RUN_DIR/model.keras, loadable with ``keras.models.load_model``; returns the path."""
  from ok_tf import runs  # pylint: disable=g-import-not-at-top
  run = run if isinstance(run, runs.Run) else runs.Run(run)
  model, _ = load_run_model(run, which, vocab_size=vocab_size)
  path = run.path / runs.MODEL_FILE
  model.save(path)
  return path
