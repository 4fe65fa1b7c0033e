"""crapnet: few-shot medical image segmentation with Cycle-Resemblance Attention.

A small library behind the ``crapnet`` command and the notebooks of the research book.
One module per concept: ``datasets``, ``protocol``, ``phantom``, ``superpixels``,
``augment``, ``episodes`` (data); ``encoders``, ``attention``, ``carafe``, ``prototypes``,
``model``, ``losses`` (model); ``experiment``, ``training``, ``evaluation``, ``metrics``
(runs); ``diagnostics`` (inside the attention), ``stats`` (spreads, seeds, paired tests),
``budget`` (Dice against training steps) (analysis); ``book`` (papermill and jupyter-book).
"""

__version__ = "0.1.0"
