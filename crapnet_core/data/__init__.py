"""Data layer: datasets and label maps on disk, scan geometry, the phantom, folds, superpixels,
augmentation, episodes, data preparation.

Imports nothing: the layer order is checked by tests/test_layout.py.
"""
