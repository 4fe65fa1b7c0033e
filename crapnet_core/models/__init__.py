"""Model layer: encoders, cycle-resemblance attention, CARAFE++, prototypes and their grid, the one
few-shot model base (base: episode contract and prediction), the segmenter, losses, the registered
methods (methods/).

Imports nothing: the layer order is checked by tests/test_layout.py.
"""
