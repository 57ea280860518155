"""One-step prediction of chaotic series: Mackey–Glass (τ = 17), Hénon and Lorenz, in pure TF.

B streams, each one trajectory of the system from its own initial condition (drawn from
the generator, then run through a burn-in so that it starts on the attractor); at step t
stream b's input is its standardised observation z_t = (x_t − μ)/σ and its target z_{t+1}
(:class:`~ok_tf.specs.Reals` (1) in and out, the loss the mean squared error). The
streams never end: reset at step 0 only, weight 1 everywhere. Every series is integrated
in float64 (its state a tensor ``[B, k]``) and standardised by constants μ, σ measured
once from a long run (:func:`measure`; docs/tasks.md, "Chaotic series"):

* **Mackey–Glass**: dx/dt = 0.2 x(t−τ)/(1 + x(t−τ)^10) − 0.1 x(t), τ = 17; classical RK4
  with dt = 0.1, the delayed value at the half step the mean of its two grid neighbours;
  sampled every Δ = 1 time unit (10 RK4 steps). State: the last τ/dt + 1 = 171 grid values
  x(t−τ) … x(t). Initial history: 171 values U(0.5, 1.5); burn-in 1000 time units.
* **Hénon**: x_{n+1} = 1 − a x_n² + y_n, y_{n+1} = b x_n, a = 1.4, b = 0.3; one map step per
  sample, x observed. Initial (x, y) U(−0.1, 0.1)²; burn-in 1000 steps.
* **Lorenz**: dx/dt = σ(y − x), dy/dt = x(ρ − z) − y, dz/dt = xy − βz, σ = 10, ρ = 28,
  β = 8/3; RK4 with dt = 0.01, sampled every Δ = 0.05 (5 RK4 steps); only the x coordinate
  is observed (a network must recover y and z from its history). Initial state U(−15, 15)
  for x and y, U(5, 45) for z; burn-in 50 time units (1000 samples).

Baselines (MSE in standardised units, :data:`SERIES`'s ``baselines``): ``mean`` (predict
0: the variance of z, 1 by construction), ``last_value`` (ẑ_{t+1} = z_t: E[(z_{t+1} −
z_t)²]) and ``no_memory`` (the best predictor from z_t alone, E[z_{t+1} | z_t], estimated
by a regression on 1000 equal-count bins of z_t over 2·10⁶ samples, the mean within-bin
variance). The constants were computed by :func:`measure` (a numpy run of 2000 streams of
1000 samples after the burn-in, seed 0); tests recompute them on a smaller run.
``baseline`` (the divergence guard's and progress line's) is ``mean``.

Randomness: ``init`` draws the initial conditions ``[B, k]`` from the generator passed in
(the stream's axis first, so a shard draws its rows of the whole batch's); ``next`` draws
nothing. :func:`reference` is a plain numpy integration of the same schemes (for tests
and :func:`measure`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Callable

import numpy as np
import tensorflow as tf

from ok_tf import specs
from ok_tf.tasks import base

# ----------------------------------------------------------------------------- the systems

MG_TAU, MG_DT, MG_SUBSTEPS = 17.0, 0.1, 10     # delay, RK4 step, RK4 steps per sample
MG_LAGS = int(round(MG_TAU / MG_DT))           # 170 grid steps back
HENON_A, HENON_B = 1.4, 0.3
LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA = 10.0, 28.0, 8.0 / 3.0
LORENZ_DT, LORENZ_SUBSTEPS = 0.01, 5


def mackey_glass_rate(x, delayed):
  """dx/dt = 0.2 x(t−τ)/(1 + x(t−τ)^10) − 0.1 x(t) (numpy or TF)."""
  return 0.2 * delayed / (1.0 + delayed ** 10) - 0.1 * x


def mackey_glass_step(history):
  """One RK4 step of dt = 0.1: ``history`` [..., 171] (x(t−τ) … x(t)) → the history one
  grid step later. The delayed value at t + dt/2 − τ is the mean of its grid neighbours."""
  x, lagged, next_lagged = history[..., -1], history[..., 0], history[..., 1]
  half = 0.5 * (lagged + next_lagged)
  dt = MG_DT
  k1 = mackey_glass_rate(x, lagged)
  k2 = mackey_glass_rate(x + 0.5 * dt * k1, half)
  k3 = mackey_glass_rate(x + 0.5 * dt * k2, half)
  k4 = mackey_glass_rate(x + dt * k3, next_lagged)
  new = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
  if isinstance(history, np.ndarray):
    return np.concatenate([history[..., 1:], new[..., None]], axis=-1)
  return tf.concat([history[..., 1:], new[..., None]], axis=-1)


def henon_step(state):
  """(x, y) → (1 − a x² + y, b x): ``state`` [..., 2]."""
  x, y = state[..., 0], state[..., 1]
  pair = (1.0 - HENON_A * x * x + y, HENON_B * x)
  if isinstance(state, np.ndarray):
    return np.stack(pair, axis=-1)
  return tf.stack(pair, axis=-1)


def lorenz_rate(state):
  """(σ(y − x), x(ρ − z) − y, xy − βz) for ``state`` [..., 3]."""
  x, y, z = state[..., 0], state[..., 1], state[..., 2]
  rates = (LORENZ_SIGMA * (y - x), x * (LORENZ_RHO - z) - y, x * y - LORENZ_BETA * z)
  if isinstance(state, np.ndarray):
    return np.stack(rates, axis=-1)
  return tf.stack(rates, axis=-1)


def lorenz_step(state):
  """One classical RK4 step of dt = 0.01."""
  dt = LORENZ_DT
  k1 = lorenz_rate(state)
  k2 = lorenz_rate(state + 0.5 * dt * k1)
  k3 = lorenz_rate(state + 0.5 * dt * k2)
  k4 = lorenz_rate(state + dt * k3)
  return state + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


@dataclasses.dataclass(frozen=True)
class System:
  """A chaotic series: its state's width, one integration step, steps per sample, what is
  observed, the initial conditions' box, the burn-in (samples), μ, σ and the baselines."""
  name: str
  width: int
  step: Callable
  substeps: int
  observe: Callable
  low: tuple
  high: tuple
  burn_in: int
  mean: float
  std: float
  baselines: dict

  def advance(self, state):
    """The state one sample later (``substeps`` integration steps; numpy or TF)."""
    for _ in range(self.substeps):
      state = self.step(state)
    return state

  def initial(self, uniform):
    """Initial states from ``uniform`` [B, k] ∈ [0, 1): the box low … high, per column
    (Mackey–Glass: all 171 history values share the box)."""
    low = np.resize(np.asarray(self.low, np.float64), self.width)
    high = np.resize(np.asarray(self.high, np.float64), self.width)
    return uniform * (high - low) + low


def _last(state):
  return state[..., -1]


def _first(state):
  return state[..., 0]


# μ, σ and the baselines (MSE, standardised units): measure(name) — numpy, 2000 streams ×
# 1000 samples, seed 0; Lorenz's μ is 0 by the symmetry (x, y, z) → (−x, −y, z) (measured
# −0.014 ± 0.025). Standard errors of the last digits: docs/tasks.md. "mean" is 1 by
# construction (measured 1.0001, 1.0000, 1.0000).
SERIES = {
    "mackey_glass": System(
        "mackey_glass", MG_LAGS + 1, mackey_glass_step, MG_SUBSTEPS, _last, (0.5,), (1.5,),
        burn_in=1000, mean=0.93001, std=0.22616,
        baselines={"mean": 1.0, "last_value": 0.021287, "no_memory": 0.021161}),
    "henon": System(
        "henon", 2, henon_step, 1, _first, (-0.1, -0.1), (0.1, 0.1), burn_in=1000,
        mean=0.25691, std=0.72100,
        baselines={"mean": 1.0, "last_value": 2.6257, "no_memory": 0.071643}),
    "lorenz": System(
        "lorenz", 3, lorenz_step, LORENZ_SUBSTEPS, _first, (-15.0, -15.0, 5.0),
        (15.0, 15.0, 45.0), burn_in=1000, mean=0.0, std=7.9246,
        baselines={"mean": 1.0, "last_value": 0.071267, "no_memory": 0.065878}),
}


def reference(system: System, initial: np.ndarray, samples: int, burn_in: int | None = None
              ) -> np.ndarray:
  """A plain numpy run: the observations ``[B, samples]`` (float64) after ``burn_in``
  samples (default: the system's) from the states ``initial`` [B, k]."""
  state = np.array(initial, np.float64)
  for _ in range(system.burn_in if burn_in is None else burn_in):
    state = system.advance(state)
  out = np.empty((state.shape[0], samples))
  for t in range(samples):
    out[:, t] = system.observe(state)
    state = system.advance(state)
  return out


def no_memory_residuals(current: np.ndarray, following: np.ndarray, bins: int = 1000
                        ) -> np.ndarray:
  """following − E[following | bin of current], bins of equal count of ``current`` (a
  binned regression), scaled by √(N/(N − bins)) so that the mean of their squares is an
  unbiased estimate of the no-memory predictor's MSE (each bin's mean is estimated)."""
  flat_current, flat_following = current.ravel(), following.ravel()
  order = np.argsort(flat_current, kind="stable")
  residuals = np.empty_like(flat_following)
  for group in np.array_split(order, bins):
    residuals[group] = flat_following[group] - flat_following[group].mean()
  residuals *= np.sqrt(residuals.size / (residuals.size - bins))
  return residuals.reshape(following.shape)


def measure(name: str, streams: int = 2000, samples: int = 1000, seed: int = 0,
            mean: float | None = None) -> dict:
  """μ, σ of the raw series and the three baselines in standardised units (by the given
  ``mean`` if any, else the measured one), from :func:`reference` runs of ``streams``
  streams of ``samples`` samples (numpy's generator seeded ``seed``), each with its
  standard error from the spread of the streams' own values (the streams are independent).
  """
  system = SERIES[name]
  uniform = np.random.default_rng(seed).uniform(size=(streams, system.width))
  x = reference(system, system.initial(uniform), samples + 1)
  mu = float(x.mean()) if mean is None else mean
  std = float(np.sqrt(((x - mu) ** 2).mean()))
  z = (x - mu) / std
  current, following = z[:, :-1], z[:, 1:]
  per_stream = {"mean": (following ** 2).mean(axis=1),
                "last_value": ((following - current) ** 2).mean(axis=1),
                "no_memory": (no_memory_residuals(current, following) ** 2).mean(axis=1)}
  root = np.sqrt(streams)
  return {"mean": mu, "std": std,
          "mean_se": float(x.mean(axis=1).std() / root),
          "std_se": float(x.std(axis=1).std() / root),
          "baselines": {k: float(v.mean()) for k, v in per_stream.items()},
          "baselines_se": {k: float(v.std() / root) for k, v in per_stream.items()}}


# ----------------------------------------------------------------------------- the task


class ChaoticState(typing.NamedTuple):
  """The streams' system states and the step count."""
  system: tf.Tensor  # [B, k] float64
  step: tf.Tensor    # [] int64


@dataclasses.dataclass(frozen=True)
class ChaoticTask:
  """One-step prediction of ``series`` (a key of :data:`SERIES`) on B streams; see the
  module docstring."""

  batch_size: int
  series: str = "mackey_glass"

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
    if self.series not in SERIES:
      raise ValueError(f"unknown series {self.series!r}; choose one of {', '.join(SERIES)}")

  @property
  def system(self) -> System:
    return SERIES[self.series]

  @property
  def input_spec(self) -> specs.Reals:
    return specs.Reals(1)

  @property
  def output_spec(self) -> specs.Reals:
    return specs.Reals(1)

  @property
  def baselines(self) -> dict[str, float]:
    """``mean``, ``last_value``, ``no_memory`` (MSE, standardised units)."""
    return dict(self.system.baselines)

  @property
  def baseline(self) -> float:
    return self.baselines["mean"]

  def shard(self, index: int, count: int) -> "ChaoticTask":
    """The same task with b = B/count streams (their initial conditions: that shard's
    rows of the whole batch's draw)."""
    return dataclasses.replace(self, batch_size=base.check_shard(self.batch_size, index, count))

  def describe(self) -> dict:
    system = self.system
    return {**base.describe(self), "series": self.series, "mean": system.mean,
            "std": system.std, "burn_in": system.burn_in}

  def init(self, rng) -> ChaoticState:
    """Initial conditions drawn in the system's box, run through the burn-in."""
    system = self.system
    uniform = rng.uniform([self.batch_size, system.width], dtype=tf.float64)
    state = tf.convert_to_tensor(system.initial(uniform), tf.float64)
    return ChaoticState(system=_burn_in(self.series, state), step=tf.constant(0, tf.int64))

  def standardise(self, x):
    """z = (x − μ)/σ as float32 ``[B, 1]``."""
    system = self.system
    return tf.cast((x[:, None] - system.mean) / system.std, tf.float32)

  def next(self, state: ChaoticState, rng) -> tuple[ChaoticState, base.Data]:
    """Input z_t, target z_{t+1}; the state one sample on; reset at step 0 only; weight 1."""
    del rng
    system = self.system
    current = tf.ensure_shape(tf.convert_to_tensor(state.system, tf.float64),
                              [self.batch_size, system.width])
    following = system.advance(current)
    b = self.batch_size
    data = base.Data(self.standardise(system.observe(current)),
                     self.standardise(system.observe(following)),
                     tf.fill([b], tf.equal(state.step, 0)), base.full_weight(b))
    return ChaoticState(system=following, step=state.step + 1), data

  def observe(self, state: ChaoticState, loss) -> ChaoticState:
    """No-op."""
    del loss
    return state

  def metrics(self, state: ChaoticState) -> dict[str, tf.Tensor]:
    """None: the loss beside the baselines says it all."""
    del state
    return {}


def _burn_in(series: str, state):
  """``state`` after the system's burn-in (one compiled loop per series)."""
  return _BURN_IN[series](state)


def _make_burn_in(system: System):
  @tf.function(reduce_retracing=True)
  def run(state):
    return tf.while_loop(lambda i, s: i < system.burn_in,
                         lambda i, s: (i + 1, system.advance(s)), (0, state))[1]
  return run


_BURN_IN = {name: _make_burn_in(system) for name, system in SERIES.items()}


# ----------------------------------------------------------------------------- the entries


@dataclasses.dataclass
class ChaoticOptions:
  """The chaotic series' own configuration: none (the series and its parameters are the
  standard ones; docs/tasks.md)."""


PRESETS = {
    # Trying the code: a small tanh network on one-step prediction, minutes on a CPU.
    "quick": dict(cell="tanh", units=32, rank=8, truncation=20, batch_size=16, lr=10 ** -2.5,
                  clip=1.0, steps=20_000, log_every=500, checkpoint_every=5_000),
    # The CPU-scale method study (results/tasks; `python -m analysis.study tasks_cpu`).
    "cpu": dict(cell="tanh", units=32, rank=8, truncation=20, batch_size=16, lr=10 ** -2.5,
                clip=1.0, steps=20_000, log_every=800, checkpoint_every=4_000),
}


def builder(series: str):
  """``build(cfg, resume)`` of the entry of ``series``."""
  def build(cfg, resume: bool) -> base.Setup:
    del resume
    return base.Setup(ChaoticTask(batch_size=cfg.batch_size, series=series))
  return build


def entry(series: str, help: str) -> base.Entry:  # pylint: disable=redefined-builtin
  return base.Entry(name=series, help=help, options=ChaoticOptions, presets=PRESETS,
                    build=builder(series))


MACKEY_GLASS = entry("mackey_glass", "one-step prediction of the Mackey-Glass series "
                     "(tau 17), MSE (docs/tasks.md)")
HENON = entry("henon", "one-step prediction of the Henon map's x, MSE (docs/tasks.md)")
LORENZ = entry("lorenz", "one-step prediction of the Lorenz system's x, MSE (docs/tasks.md)")
