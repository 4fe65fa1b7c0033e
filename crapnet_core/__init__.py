"""crapnet: few-shot medical image segmentation with Cycle-Resemblance Attention.

A small library behind the ``crapnet`` command and the notebooks of the research book.
Layers, bottom to top; a module imports only its own layer and those below
(tests/test_layout.py checks the import graph):

- base: ``facts`` (organs, label maps, the method registry, settings, profile names;
  the profiles' values in ``profiles.yaml``), ``published`` (the paper's Tables 1-4), ``io``, ``paths``;
- ``data``: ``datasets`` (the public dataset API over ``spec``, ``scans``, ``validation``,
  ``volumes``, ``intensities``, ``body``, ``summary``, ``tensors``), ``geometry`` (scan grids),
  ``labels``, ``protocol``, ``phantom``, ``superpixels``, ``augment``, ``episodes``, ``prepare``;
- ``models``: ``config``, ``encoders``, ``attention``, ``carafe``, ``prototypes``,
  ``prototype_grid``, ``segmenter``, ``losses``, ``methods`` (the registered methods);
- ``engine``: ``experiment``, ``profiles``, ``inputs``, ``checkpoints``, ``training``, ``run_folder``,
  ``evaluation``, ``prediction``,
  ``metrics``, ``runs``, ``stats`` (spreads, seeds, paired tests), ``budget`` (Dice against
  training steps), ``diagnostics`` (inside the attention), ``segment``;
- ``report``: ``tables`` (ours and the paper's), ``plots`` (results), ``figures`` (style, slices,
  data pages), ``provenance``, ``findings``, ``viewer``;
- ``book``: ``plan`` (what the book runs), ``execute`` (papermill), ``build`` (pages and
  jupyter-book), ``workflow`` (the study's Snakemake steps), ``content_keys``, ``jobs`` (job
  bodies), ``gpus``, ``driver`` (``crapnet book``), ``study_flow`` (``crapnet study run``);
  the browser and JupyterLab checks are developer tools under ``tests/e2e/``;
- ``cli``: the ``crapnet`` command.
"""

__version__ = "0.1.0"
