"""Report layer: tables and plots against the paper's published numbers, provenance, findings,
slice viewer.

Imports nothing: the layer order is checked by tests/test_layout.py.
"""
