"""Philox generators named by a key: the random streams of training, diagnostics and tests.

``tf.random.Generator.from_seed(s)`` puts s in the counter, so seeds s and s + 1 give
overlapping streams; a generator made from a *key* at counter 0 cannot overlap another
key's (docs/algorithms.md, "Random numbers"). :func:`generator` is how the package makes
one: ``training.make_generator`` (key 2·seed + stream) and ``diagnostics.measure`` (key
seed); tests that need a key's stream use it too.
"""

from __future__ import annotations

import tensorflow as tf


def generator(key: int) -> tf.random.Generator:
  """The Philox generator of key ``key`` at counter 0."""
  return tf.random.Generator.from_key_counter(key=int(key), counter=[0, 0], alg="philox")
