"""KF-RTRL (Mujika et al. 2018) and r-KF-RTRL-AVG, its average over r replicas."""

from __future__ import annotations

from ok_tf import kronecker
from ok_tf.estimators.kronecker_sum import KroneckerState
from ok_tf.estimators.kronecker_sum import KroneckerSum


class KFAvg(KroneckerSum):
  """r-KF-RTRL-AVG: r independent KF-RTRL estimators, averaged (same memory as OK(r))."""

  name = "kf_avg"
  order = 1

  def step(self, state, x, rng):
    st, ha, d = self._families(state, x)
    u, a = kronecker.kf_reduce(state.u, ha, st.hhat, d, rng)
    return KroneckerState(st.state, u, self._unflatten(a))

  def _replicas(self):
    return float(self.rank)


class KF(KFAvg):
  """KF-RTRL (Mujika et al. 2018): one Kronecker term u ⊗ A."""

  name = "kf"
  order = 2
  takes_rank = False
  fixed_rank = 1
  rank_hint = "use kf_avg for r averaged replicas"
