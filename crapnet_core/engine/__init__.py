"""Engine layer: experiment configs and profiles, input checks, training, checkpoints, evaluation,
metrics, runs and cross-validation, statistics, budget curves, diagnostics, segment, the run
environment record and the rerun check.

Imports nothing: the layer order is checked by tests/test_layout.py.
"""
