"""Analysis scripts: plots and tables from run directories (see ok_tf/rundir/), the noise
study, the speed benchmark; run from the repository root as ``python -m analysis.<name>``."""
