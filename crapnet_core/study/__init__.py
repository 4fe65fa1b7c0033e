"""The study: one declaration of every table (``study.yaml``), its runs and their committed results.

Layer between ``report`` and ``book``: :mod:`.declaration` (load and validate the declaration,
expand tables into runs), :mod:`.layout` (the per-run results layout, status, migration),
:mod:`.jobs` (the bodies of the workflow's jobs), :mod:`.cost` (what a set of runs costs),
:mod:`.provenance` (run_info.json), :mod:`.analyses` (the one-off analyses). The workflow that runs
it is ``workflow/study.smk``, driven by :mod:`crapnet_core.book.study_flow` (``crapnet study``).
"""
