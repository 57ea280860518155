"""Analysis scripts: plots and tables from run directories (see ok_tf/runs.py)."""
