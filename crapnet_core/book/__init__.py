"""Book layer: plan, papermill execution and jupyter-book assembly of the research book, the
Snakemake workflow that drives it, JupyterLab, browser check.

Imports nothing: the layer order is checked by tests/test_layout.py.
"""
