"""What a task feeds a model and what it asks of it: input and output specs.

A task (:mod:`ok_tf.tasks`) states one input spec and one output spec; the model
(:class:`ok_tf.models.RecurrentModel`) takes its input layer and readout from them:

* inputs :class:`Symbols` (V): ids ``[B]`` int32, fed one-hot, x_t = e_{id} ∈ R^V;
* inputs :class:`Reals` (d): vectors ``[B, d]``, fed as they are, x_t ∈ R^d;
* outputs :class:`Classes` (K): a softmax readout, targets ids ``[B]`` int32 in {0 … K−1},
  the loss of stream b the cross-entropy L_b = −log softmax(o_t)[y_b] in nats,
  reported in bits (L_b / ln 2);
* outputs :class:`Reals` (m): a linear readout ŷ_t ∈ R^m, targets ``[B, m]``, the loss
  the mean squared error L_b = (1/m) Σ_j (ŷ_{t,b,j} − y_{t,b,j})², reported as it is.

o_t = [h_t, 1] W_out (a Dense layer with bias) in both cases. ``unit`` names the reported
loss ("bits", "mse") and ``loss_column`` the metrics column that holds it. Specs are
frozen dataclasses; :func:`to_json` / :func:`from_json` write them into a run's config.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

#: ln 2: a loss in nats over ln 2 is in bits.
LN2 = math.log(2.0)
#: log2 e = 1 / ln 2: the factor from nats to bits inside the compiled steps (``report_scale``).
LOG2E = 1.0 / LN2


def nats_to_bits(nats):
  """A loss in nats (a float, numpy value or tensor) in bits: nats / ln 2."""
  return nats / LN2


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What every spec has: a positive integer ``size``, the width it gives x_t or o_t."""

  size: int

  def __post_init__(self):
    if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
      raise ValueError(f"{type(self).__name__} needs a positive integer size, got {self.size!r}")

  @property
  def width(self) -> int:
    """The width of x_t (inputs) or of the readout's o_t (outputs)."""
    return self.size

  @property
  def loss_column(self) -> str:
    """The metrics column of the reported loss (outputs only)."""
    return f"loss_{self.unit}"


@dataclasses.dataclass(frozen=True)
class Symbols(_Spec):
  """Symbol inputs: ids ``[B]`` int32 in {0 … size−1}, fed one-hot (width ``size``)."""

  kind = "symbols"

  def encode(self, inputs, dtype) -> tf.Tensor:
    """x_t ``[B, size]``: the one-hot rows of ``inputs`` [B]."""
    return tf.one_hot(inputs, self.size, dtype=dtype)

  def batch_spec(self, batch: int | None) -> tf.TensorSpec:
    return tf.TensorSpec([batch], tf.int32)


@dataclasses.dataclass(frozen=True)
class Reals(_Spec):
  """Real vectors ``[B, size]``: inputs fed as they are, or a linear readout's targets
  with the mean squared error (1/m) Σ_j (ŷ_j − y_j)² as the loss."""

  kind = "reals"
  unit = "mse"
  report_scale = 1.0

  def encode(self, inputs, dtype) -> tf.Tensor:
    """x_t ``[B, size]``: ``inputs`` in the model's dtype."""
    return tf.cast(inputs, dtype)

  def batch_spec(self, batch: int | None) -> tf.TensorSpec:
    return tf.TensorSpec([batch, self.size], tf.float32)

  def losses(self, outputs, targets) -> tf.Tensor:
    """L_b = (1/m) Σ_j (ŷ_{b,j} − y_{b,j})², ``[B]``."""
    return tf.reduce_mean(tf.square(outputs - tf.cast(targets, outputs.dtype)), axis=-1)


@dataclasses.dataclass(frozen=True)
class Classes(_Spec):
  """Class targets: ids ``[B]`` int32 in {0 … size−1}; softmax cross-entropy, in bits."""

  kind = "classes"
  unit = "bits"
  report_scale = LOG2E   # nats → bits

  def batch_spec(self, batch: int | None) -> tf.TensorSpec:
    return tf.TensorSpec([batch], tf.int32)

  def losses(self, outputs, targets) -> tf.Tensor:
    """L_b = −log softmax(o_b)[y_b], nats, ``[B]``."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=outputs)


INPUTS = {cls.kind: cls for cls in (Symbols, Reals)}
OUTPUTS = {cls.kind: cls for cls in (Classes, Reals)}


def to_json(spec) -> dict:
  """``{"kind": ..., "size": ...}``, as a run's config records it."""
  return {"kind": spec.kind, "size": int(spec.size)}


def from_json(value: dict, role: str):
  """The spec of :func:`to_json`'s dict; ``role`` is ``"inputs"`` or ``"outputs"``."""
  kinds = INPUTS if role == "inputs" else OUTPUTS
  if not isinstance(value, dict) or value.get("kind") not in kinds:
    raise ValueError(f"cannot read {value!r} as an {role} spec: expected "
                     f"{{'kind': one of {sorted(kinds)}, 'size': n}}")
  return kinds[value["kind"]](int(value["size"]))
