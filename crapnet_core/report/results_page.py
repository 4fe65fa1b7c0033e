"""The book's results page (notebook 06, *Results against the paper*), built by one object.

:class:`ResultsPage` gathers our rows once — the cross-validation summaries committed under
``results/`` (profile ``results_profile``), the declared tables this build cross-validates itself
(``tables``: the study declaration's tables of the results page, when the book's profile trains
them), and this build's one-fold runs (``run_datasets``) — and each method shows one section of
the page: :meth:`glance` (mean Dice per method, ours next to the paper's), :meth:`table` (the
Table 1 / Table 2 analogue), :meth:`per_organ`, :meth:`statistics` (the declared families of
comparisons under the declared rule),
:meth:`budget` (test Dice against steps), :meth:`decomposition` and :meth:`provenance` (where every
row of ours comes from). The notebook holds the page's prose and calls these; nothing is computed
in the notebook itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..facts import DATASET_LABELS, FOLDS, SETTINGS
from . import plots
from .provenance import left_out_md, provenance_md
from .tables import (
    PAPER,
    comparison_table,
    load_summaries,
    published_frame,
    published_notes_md,
    run_frame,
    styled,
    summaries_provenance,
    summary_frame,
)


def _display(*objs) -> None:
    from IPython.display import display

    display(*objs)


def _md(text: str):
    from IPython.display import Markdown

    return Markdown(text)


class ResultsPage:
    """Our rows of the results page and the page's sections (see the module docstring).

    Parameters are the notebook's: ``profile`` of this build, its ``datasets``, ``data_root``,
    ``results_dir`` (default ``<repo>/results``), ``results_profile`` (the committed summaries shown),
    ``runs_root`` (default ``<repo>/runs``), ``device``, ``tables`` (declared tables to cross-validate:
    dicts with name, label, dataset, setting, method, variant, overrides, folds, seeds),
    ``run_datasets``/``run_fold``/``run_methods`` (this build's one-fold runs shown), ``interactive``
    (progress bars). The runs are trained by the workflow before the page runs (or here, when the
    notebook is run by hand).
    """

    def __init__(
        self,
        profile: str,
        datasets: Sequence[str] | None = None,
        data_root: str | None = None,
        results_dir: str | os.PathLike | None = None,
        results_profile: str = "lite",
        runs_root: str | os.PathLike | None = None,
        device: str = "auto",
        tables: Sequence[Mapping[str, Any]] = (),
        run_datasets: Sequence[str] = (),
        run_fold: int = 0,
        run_methods: Sequence[str] = (),
        interactive: bool = False,
    ) -> None:
        import pandas as pd
        from tqdm.auto import tqdm

        from ..engine.runs import cross_validate, ensure_run, read_metrics, run_config
        from ..paths import available_datasets, default_results_dir, default_runs_root

        self.profile, self.results_profile, self.interactive = profile, results_profile, interactive
        self.results_dir = Path(results_dir) if results_dir else default_results_dir()
        self.runs_root = runs_root or default_runs_root()
        if datasets is None:  # run by hand: the real data when $CRAPNET_DATA_ROOT holds it
            datasets = available_datasets(data_root or os.environ.get("CRAPNET_DATA_ROOT")) or ["phantom"]
        self.datasets = list(datasets)
        parts = []  # long frames of our numbers, one per source
        self.provenance_rows: list[tuple[str, str]] = []  # (short line, details HTML or Markdown) per source

        self.summaries = load_summaries(self.results_dir, profile=results_profile)
        if self.summaries:
            committed = summary_frame(self.summaries)
            committed["source"] = committed.apply(lambda r: f"ours ({r.profile}, folds {r.folds})", axis=1)
            parts.append(committed)
            n = len(self.summaries)
            table = summaries_provenance(self.summaries).to_html(index=False, classes="dataframe", border=0)
            self.provenance_rows.append(
                (
                    f"**Committed cross-validation** ({n} summar{'y' if n == 1 else 'ies'}, profile `{results_profile}`, "
                    f"real data): `crapnet cross-validate` summaries under `{self.results_dir}`; commands, wall times and "
                    "machine in `results/README.md` and below.",
                    f'<details class="crapnet-provenance"><summary>Each committed summary: machine, wall time and exact '
                    f"command (from <code>run_info.json</code>)</summary>{table}</details>",
                )
            )

        tables = [t for t in tables if t["dataset"] in self.datasets]  # a table of a dataset this build lacks: not here
        cv_sets = list(dict.fromkeys(t["dataset"] for t in tables))
        for t in tqdm(list(tables), desc="declared tables", disable=not interactive):
            overrides = [*t.get("overrides", []), *[f"train.seed={s}" for s in t.get("seeds", [0])[:1] if s]]
            # the runs shared under the book's runs_root (the one-fold pages and this reuse each other's
            # runs); nothing written besides the runs (the training is the engine's: cross_validate)
            data = [f"data.data_root={data_root}"] if data_root else []
            summary = cross_validate(
                t["dataset"],
                t["setting"],
                t["method"],
                profile,
                self.runs_root,
                [*overrides, *data],
                folds=t["folds"],
                progress=False,
                device=device,
                write_summary=False,
            )
            frame = summary_frame([summary])
            folds = t["folds"]
            frame["source"] = (
                f"ours ({profile}, {t['dataset']}, fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))})"
            )
            parts.append(frame)
        for dataset in run_datasets:
            frames = []
            for method in tqdm(list(run_methods), desc=f"{dataset} runs", disable=not interactive):
                cfg = run_config(profile, dataset, 1, run_fold, method, data_root=data_root)
                run_dir = ensure_run(cfg, self.runs_root, progress=False, device=device)
                frames.append(run_frame(read_metrics(run_dir)))
            frame = pd.concat(frames, ignore_index=True)
            frame["source"] = f"ours ({profile}, fold {run_fold} only)"
            parts.append(frame)
        self.shown = sorted(set(cv_sets) | set(run_datasets))
        if self.shown:
            details = provenance_md(profile, self.shown, data_root, what="The rows of this build")
            if tables:
                ran_folds = sorted({f for t in tables for f in t["folds"]})
                ran_settings = sorted({int(t["setting"]) for t in tables})
                details += (
                    "\n\n"
                    + left_out_md("Cross-validation folds", ran_folds, FOLDS)
                    + "\n\n"
                    + left_out_md("Settings", ran_settings, SETTINGS)
                )
            if run_datasets:
                details += "\n\n" + left_out_md("Folds of this build's runs", [run_fold], FOLDS)
            self.provenance_rows.append(
                (
                    f"**This build's runs** (profile `{profile}`, {', '.join(self.shown)}): trained by this page or by "
                    "the one-fold pages of this build.",
                    details,
                )
            )
        self.ours = pd.concat(parts, ignore_index=True) if parts else None

    # ------------------------------------------------------------------ sections
    def warning(self) -> None:
        """The synthetic-data warning, on top of the page when this build's rows come from the phantom."""
        if "phantom" in self.shown:
            _display(
                _md(
                    ":::{warning}\n**Synthetic data.** Rows of this build come from the built-in phantom, not "
                    "from patients: they show that the pipeline runs end to end, nothing about real organs.\n:::"
                )
            )

    def glance(self):
        """Mean Dice per method, ours next to the paper's (one panel per dataset and setting)."""
        import matplotlib.pyplot as plt

        if self.ours is None:
            print("no numbers of ours to compare: no committed summaries and no runs of this build")
        plots.comparison_figure(self.ours)
        plt.show()

    def table(self, setting: int) -> None:
        """The Table 1 (setting 1) or Table 2 (setting 2) analogue: one table per dataset."""
        ours = self.ours
        names = [] if ours is None else list(dict.fromkeys(ours[ours.setting == setting].dataset))
        refs = []
        for name in names or ["chaos", "sabs"]:
            ref = name if name in ("chaos", "sabs") else "chaos"
            refs.append(ref)
            t = comparison_table(ours, setting, name, reference=ref)
            caption = f"Setting {setting}, {DATASET_LABELS.get(name, name)}"
            if ref != name:
                caption += f" (published rows: {DATASET_LABELS[ref]}, for scale only)"
            _display(styled(t, caption))
            sources = [s for s in dict.fromkeys(t.index.get_level_values(1)) if not str(s).startswith("published")]
            _display(
                _md(
                    f"<small>Published: the paper's Table {setting} ({PAPER}). Ours: "
                    + (", ".join(sources) if sources else "none")
                    + " (see *Provenance* below).</small>"
                )
            )
        note = published_notes_md(setting, refs)
        if note:
            _display(_md(note))

    def per_organ(self) -> None:
        """One panel per organ and the organ mean: ours next to the published Dice of the same method."""
        import matplotlib.pyplot as plt
        import pandas as pd

        if self.ours is None:
            print("no numbers of ours to plot")
            return
        pub_all = pd.concat([published_frame(1), published_frame(2)], ignore_index=True)
        for (dataset, setting), frame in self.ours.groupby(["dataset", "setting"]):
            ref = "chaos" if dataset not in ("chaos", "sabs") else dataset
            pub = pub_all[
                (pub_all.dataset == ref)
                & (pub_all.setting == setting)
                & pub_all.method_key.isin(frame.method_key.unique())
            ]
            pub = pub.assign(source=f"published ({DATASET_LABELS[ref]})")
            both = pd.concat([pub, frame], ignore_index=True)
            plots.plot_organ_panels(both, title=f"{DATASET_LABELS.get(dataset, dataset)}, setting {setting}")
            plt.show()

    def statistics(self) -> None:
        """Every declared comparison of the committed results under the declared rule
        (:mod:`crapnet_core.engine.decision`): the families' tables and the seed bands."""
        from . import collect, stats_tables

        if self.summaries:
            analysis = collect.analysis(
                self.results_dir
            )  # cached in results/compare/analysis.json while its inputs are unchanged
            _display(_md(stats_tables.rule_md()))
            for fam in analysis["families"].values():
                _display(_md(f"**{fam['title']}**. {fam['question']}\n\n" + stats_tables.family_table(fam)))
            for band in analysis["bands"].values():
                _display(_md(stats_tables.seed_band_md(band)))
        else:
            print("No committed summaries to compare.")

    def budget(self) -> None:
        """Test Dice against training steps from the committed budget curves (``budget.json``)."""
        import matplotlib.pyplot as plt

        from ..engine import budget

        budgets = budget.load_budgets(self.results_dir)
        if budgets:
            budget.plot_budget(budgets)
            plt.show()
            for b in budgets:
                _display(_md(budget.budget_markdown(b)))
        else:
            print(f"No budget curves (budget.json) committed under {self.results_dir}.")

    def decomposition(self) -> None:
        """CHAOS setting 1: SSL-ALPNet, + attention, + CARAFE++, CRAPNet, aligned window (seed 0, per fold)."""
        import matplotlib.pyplot as plt

        rows = load_summaries(self.results_dir, profile=self.results_profile, variants=True, seed=0)
        if plots.has_decomposition(rows):
            plots.decomposition_figure(rows)
            plt.show()
        else:
            print(f"No decomposition summaries committed under {self.results_dir}.")

    def provenance(self) -> None:
        """Where every row of ours comes from: one line per source, details unfolded on request."""
        from IPython.display import HTML

        for line, details in self.provenance_rows:
            _display(_md(line))
            _display(HTML(details) if details.startswith("<details") else _md(details))
        if not self.provenance_rows:
            print("no rows of ours on this page")


__all__ = ["ResultsPage"]
