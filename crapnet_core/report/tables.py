"""Our numbers and the paper's as tables, for the notebooks and pages of the book.

- **Published numbers** (:func:`published_frame`): Tables 1-4 of the paper (Ding et al.,
  WACV 2023, transcribed once in :mod:`crapnet_core.published`), always labelled
  ``source="published"`` — they are the paper's numbers, never ours.
- **Our numbers** (:func:`run_frame`, :func:`per_scan_frame`, :func:`summary_frame`): long-format
  ``pandas`` frames with one row per (dataset, setting, method, organ, source), from
  ``metrics.json`` files and the committed cross-validation summaries (:func:`load_summaries`).
- **Tables in the paper's layout** (:func:`comparison_table`, :func:`ablation_table`,
  :func:`fold_mean`, :func:`styled`, :func:`published_notes_md`).

Dice is a fraction 0..1 in our metrics files and 0..100 in the paper; the tables here show
0..100 (``dice`` columns) like the paper.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..facts import DATASET_LABELS, METHOD_LABELS, ORGAN_SHORT, ORGANS  # study facts
from ..io import read_json
from ..published import PUBLISHED, PUBLISHED_INCONSISTENT, PUBLISHED_METHOD_KEYS  # the one transcription

#: How the pages cite the paper.
PAPER = "Ding et al., CRAPNet, WACV 2023"

# --------------------------------------------------------------------------- published
#: The paper's row name -> our method key: every registry method is labelled with its row name
#: (ALPNet-init, ALPNet = supervised, SSL-RPNet ...), so each published row finds its method.
_PAPER_TO_KEY = {label: key for key, label in METHOD_LABELS.items()}
#: Row order of the Tables 1-2 analogues and bar order of the comparison figure: the paper's
#: tables, then the methods that came after it (registry order).
_PAPER_ORDER = ("alpnet_init", "alpnet_sup", "panet", "alpnet", "rpnet", "crapnet")
METHOD_ORDER = (*[k for k in _PAPER_ORDER if k in METHOD_LABELS], *[k for k in METHOD_LABELS if k not in _PAPER_ORDER])


def published_frame(table: int):
    """Long frame of the paper's Table ``table`` (1-4), ``source = "published"``.

    Columns: table, dataset, setting, method (display name), method_key (ours, or None),
    variant (blocks for Table 3, branches for Table 4, else None), organ, dice (0..100).
    ``organ == "mean"`` rows hold the paper's printed means.
    """
    import pandas as pd

    if table not in (1, 2, 3, 4):
        raise ValueError(f"table: {table} is not one of 1, 2, 3, 4")
    rows = []
    data = PUBLISHED[f"table{table}"]
    if table in (1, 2):
        for dataset, methods in data.items():
            for method, values in methods.items():
                for organ, value in zip((*ORGANS, "mean"), values):
                    rows.append(
                        dict(
                            table=table,
                            dataset=dataset,
                            setting=table,
                            method=method,
                            method_key=_PAPER_TO_KEY.get(method),
                            variant=None,
                            organ=organ,
                            dice=value,
                            source="published",
                        )
                    )
    else:
        for variant, values in data.items():
            for organ, value in zip((*ORGANS, "mean"), values):
                rows.append(
                    dict(
                        table=table,
                        dataset="chaos",
                        setting=1,
                        method="CRAPNet",
                        method_key="crapnet",
                        variant=variant,
                        organ=organ,
                        dice=value,
                        source="published",
                    )
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- our numbers
def run_frame(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]], source: str = "ours", variant: Any = None):
    """Long frame from one or more ``metrics.json`` dicts (:func:`crapnet_core.engine.evaluation.evaluate`).

    One row per (run, organ) plus an ``organ == "mean"`` row: dice (0..100), dice_std,
    hd95 and asd (mm), n_scans, fold, setting, method, dataset, profile, source, variant.
    """
    import pandas as pd

    items = [metrics] if isinstance(metrics, Mapping) else list(metrics)
    rows = []
    for m in items:
        base = dict(
            dataset=m.get("dataset"),
            setting=m.get("setting"),
            fold=m.get("fold"),
            method_key=m.get("method"),
            method=METHOD_LABELS.get(m.get("method"), m.get("method")),
            profile=m.get("profile"),
            source=source,
            variant=variant,
        )
        for organ in m.get("organs", []):
            po = m["per_organ"][organ]
            rows.append(
                dict(
                    base,
                    organ=organ,
                    dice=_pct(po.get("dice_mean")),
                    dice_std=_pct(po.get("dice_std")),
                    hd95=po.get("hd95_mean"),
                    asd=po.get("asd_mean"),
                    n_scans=po.get("n_scans"),
                )
            )
        mean = m.get("mean", {})
        rows.append(
            dict(
                base,
                organ="mean",
                dice=_pct(mean.get("dice")),
                dice_std=None,
                hd95=mean.get("hd95"),
                asd=mean.get("asd"),
                n_scans=None,
            )
        )
    return pd.DataFrame(rows)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * float(value)


def per_scan_frame(metrics: Mapping[str, Any]):
    """One row per (organ, test scan) of a ``metrics.json``: dice (0..100), hd95, asd, slices scored."""
    import pandas as pd

    rows = []
    for organ, scans in metrics.get("per_scan", {}).items():
        for sid, r in scans.items():
            if r.get("absent"):
                rows.append(dict(organ=organ, scan=sid, dice=None, hd95=None, asd=None, note="organ absent"))
                continue
            z = r.get("z_range") or [None, None]
            rows.append(
                dict(
                    organ=organ,
                    scan=sid,
                    dice=_pct(r.get("dice")),
                    hd95=r.get("hd95"),
                    asd=r.get("asd"),
                    slices=f"{z[0]}-{z[1]}",
                    note="empty prediction" if r.get("empty_prediction") else "",
                )
            )
    return pd.DataFrame(rows)


def summary_variant(summary: Mapping[str, Any]) -> str | None:
    """The model variant of a summary: :func:`crapnet_core.models.config.summary_variant`."""
    from ..models.config import summary_variant as variant

    return variant(summary)


def load_summaries(
    results_dir: str | os.PathLike, profile: str | None = None, variants: bool = False, seed: int | None = None
) -> list[dict[str, Any]]:
    """Cross-validation summaries committed under ``results_dir`` (``*/summary.json``).

    Each summary is returned as read, with ``_path`` and ``variant`` (:func:`summary_variant`)
    added; ``profile`` keeps only those whose folder name ends in ``_<profile>`` or whose
    ``profile`` field equals it. Component variants (the decomposition rows, e.g. SSL-ALPNet +
    attention) are left out unless ``variants``: the Tables 1-2 analogues and the findings
    compare the methods as published, one row per method.

    ``seed``: one training seed instead of the aggregate over seeds: ``<folder>/seed<k>/summary.json``
    where the folder has it; a table that was run with one seed only (no ``seed*/`` folders or only
    ``seed<k>/``) is read as it is; a table with other seeds only is left out.
    """
    out = []
    root = Path(results_dir)
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/summary.json")):
        if seed is not None:
            seeds = sorted(p.name for p in path.parent.glob("seed*") if (p / "summary.json").is_file())
            if f"seed{seed}" in seeds:
                path = path.parent / f"seed{seed}" / "summary.json"
            elif seeds:
                continue
        try:
            data = read_json(path, what="summary")
        except (OSError, ValueError) as err:  # read_json's message names the file
            raise ValueError(f"not a readable summary: {err}") from None
        if profile and not (path.parent.name.endswith(f"_{profile}") or data.get("profile") == profile):
            continue
        data["variant"] = summary_variant(data)
        if not variants and data["variant"] not in (None, data.get("method")):
            continue
        data["_path"] = str(path)
        info = path.parent / "run_info.json"  # written next to the summary: command, machine, wall time
        if info.is_file():
            data["_run_info"] = read_json(info)
        out.append(data)
    return out


def summaries_provenance(summaries: Iterable[Mapping[str, Any]]):
    """One row per committed summary: folder, profile, folds, machine, wall time, command."""
    import pandas as pd

    rows = []
    for s in summaries:
        info = s.get("_run_info", {})
        rows.append(
            {
                "results folder": Path(s.get("_path", "?")).parent.name,
                "profile": s.get("profile"),
                "folds": ",".join(str(f) for f in s.get("folds", [])),
                "machine": info.get("machine", "not recorded"),
                "torch": info.get("torch", ""),
                "wall time (s)": info.get("wall_seconds"),
                "command": info.get("command", ""),
            }
        )
    return pd.DataFrame(rows)


def summary_frame(summaries: Iterable[Mapping[str, Any]], source: str = "ours"):
    """Long frame (organ rows + a ``mean`` row) from cross-validation summaries.

    Reads the layout of :func:`crapnet_core.engine.runs.summarize_runs` (``summary.json`` of
    ``crapnet cross-validate``): ``dataset``, ``setting``, ``method``, ``profile``, ``folds``
    and ``mean = {"dice": {organ: fraction, "mean": fraction}, "dice_std_over_folds": {...},
    "hd95": {...}, "asd": {...}}``. Dice is shown 0..100. ``dice_std`` is the sample standard
    deviation over folds (ddof=1), recomputed from ``per_fold`` when the summary has it (also
    for the organ mean, :func:`crapnet_core.engine.stats.fold_spread`), else the stored value.
    """
    import pandas as pd

    from ..engine.stats import fold_spread

    rows = []
    for s in summaries:
        try:
            mean = s["mean"]
            dice = mean["dice"]
        except (KeyError, TypeError):
            raise ValueError(
                f"{s.get('_path', 'summary')}: no mean.dice table (not a crapnet cross-validate summary)"
            ) from None
        std = mean.get("dice_std_over_folds", {})
        if s.get("per_fold"):
            std = {k: v["std"] for k, v in fold_spread(s).items()}
        base = dict(
            dataset=s.get("dataset"),
            setting=s.get("setting"),
            method_key=s.get("method"),
            method=METHOD_LABELS.get(s.get("method"), s.get("method")),
            profile=s.get("profile"),
            folds=",".join(str(f) for f in s.get("folds", [])),
            n_folds=len(s.get("folds", [])),
            source=source,
            variant=None,
            path=s.get("_path"),
        )
        for organ in [*[o for o in ORGANS if o in dice], "mean"]:
            rows.append(
                dict(
                    base,
                    organ=organ,
                    dice=_pct(dice.get(organ)),
                    dice_std=_pct(std.get(organ)),
                    hd95=mean.get("hd95", {}).get(organ),
                    asd=mean.get("asd", {}).get(organ),
                )
            )
    return pd.DataFrame(rows)


def comparison_table(ours, table: int, dataset: str, reference: str | None = None, spread: bool = False):
    """One dataset in the layout of the paper's Tables 1-2: rows (method, source), columns LK..Mean.

    ``ours`` is a long frame (:func:`run_frame` / :func:`summary_frame`) with columns
    dataset, setting, method, organ, dice and source; its rows for ``dataset`` and setting
    ``table`` are kept. The published rows are the paper's Table ``table`` (1 or 2) for
    ``reference`` (default: ``dataset``; the phantom has no published counterpart, pass
    e.g. ``"chaos"`` to show the MRI numbers as a scale), all of its methods (those we do not
    implement stay for reference). Each of our rows sits under the published row of its
    method. Dice 0..100, rounded to 2 decimals; missing cells are NaN.

    ``spread=True``: text cells ``"mean ± std"`` where the row is a cross-validation summary
    over more than one fold (``n_folds`` > 1; std over folds, :func:`summary_frame`), plain
    means elsewhere (published rows, single-fold runs), "–" for missing cells.
    """
    import pandas as pd

    if table not in (1, 2):
        raise ValueError(f"table: {table} must be 1 or 2 (Tables 3-4: ablation_table)")
    reference = reference or dataset
    pub = published_frame(table)
    pub = pub[pub["dataset"] == reference]
    if reference != dataset:
        pub = pub.assign(source=f"published ({DATASET_LABELS.get(reference, reference)})")
    frames = [pub]
    if ours is not None and len(ours):
        mine = ours[(ours["dataset"] == dataset) & (ours["setting"] == table)]
        frames.append(mine)
    both = pd.concat(frames, ignore_index=True)
    both = both.assign(organ=both["organ"].map(lambda o: ORGAN_SHORT.get(o, "Mean" if o == "mean" else o)))
    wide = both.pivot_table(index=["method", "source"], columns="organ", values="dice", aggfunc="mean")
    wide = wide[[c for c in [*ORGAN_SHORT.values(), "Mean"] if c in wide.columns]]
    method_order = [METHOD_LABELS[k] for k in METHOD_ORDER]
    wide = wide.reindex(
        sorted(
            wide.index,
            key=lambda i: (
                method_order.index(i[0]) if i[0] in method_order else 99,
                not str(i[1]).startswith("published"),
                str(i[1]),
            ),
        )
    )
    wide.columns.name = None
    wide = wide.round(2)
    if not spread:
        return wide
    if "n_folds" in both.columns and "dice_std" in both.columns:
        std_src = both.assign(dice_std=both["dice_std"].where(both["n_folds"].fillna(0) > 1))
        std = std_src.pivot_table(index=["method", "source"], columns="organ", values="dice_std", aggfunc="mean")
    else:
        std = pd.DataFrame(index=wide.index, columns=wide.columns, dtype=float)
    return _pm_cells(wide, std)


def _pm_cells(wide, std):
    """Text table ``"mean ± std"`` from a numeric table and its std (same labels; NaN std: mean only)."""
    import pandas as pd

    if std.empty or std.index.nlevels != wide.index.nlevels:  # no spread at all (e.g. single-fold rows only)
        std = pd.DataFrame(index=wide.index, columns=wide.columns, dtype=float)
    else:
        std.index = std.index.set_names(wide.index.names)
    std = std.reindex(index=wide.index, columns=wide.columns)

    def cell(m, sd):
        if m is None or (isinstance(m, float) and np.isnan(m)):
            return "–"
        return f"{m:.2f}" if sd is None or (isinstance(sd, float) and np.isnan(sd)) else f"{m:.2f} ± {sd:.2f}"

    return pd.DataFrame(
        [[cell(wide.iloc[i, j], std.iloc[i, j]) for j in range(wide.shape[1])] for i in range(wide.shape[0])],
        index=wide.index,
        columns=wide.columns,
    )


def fold_mean(frame, by: Sequence[str] = ("variant", "organ")):
    """Mean over folds of a long :func:`run_frame` (one row per run and organ).

    Returns columns ``by`` + dice (mean over the folds), dice_std (sample std over folds,
    ddof=1; NaN with one fold) and n_folds, for the ablation tables (``spread=True``).
    """
    g = frame.groupby(list(by), as_index=False)["dice"]
    out = g.mean()
    out["dice_std"] = g.std(ddof=1)["dice"].values
    out["n_folds"] = g.count()["dice"].values
    return out


def styled(frame, caption: str | None = None, precision: int = 2):
    """A pandas Styler for the book: fixed precision, "–" for missing cells, optional caption."""
    sty = frame.style.format(precision=precision, na_rep="–").set_table_attributes('class="dataframe"')
    return sty.set_caption(caption) if caption else sty


def published_notes_md(table: int, datasets: Sequence[str] | None = None) -> str:
    """Markdown note on the rows of Table ``table`` (of ``datasets``) whose printed mean is not their organs' mean."""
    notes = []
    for key, (printed, actual) in PUBLISHED_INCONSISTENT.items():
        if key[0] != f"table{table}" or (datasets is not None and len(key) == 3 and key[1] not in datasets):
            continue
        row = f"{key[2]}, {DATASET_LABELS.get(key[1], key[1])}" if len(key) == 3 else f"{key[1]} block(s)"
        notes.append(
            f"the paper prints {printed:.2f} as the mean of the row {row}, whose four organs average {actual:.3f}"
        )
    if not notes:
        return ""
    return "*Published numbers are transcribed as printed; " + "; ".join(notes) + ".*"


def ablation_table(ours, table: int, ours_label: str = "ours", spread: bool = False):
    """Tables 3-4 layout: rows (variant, source), columns LK, RK, Spleen, Liver, Mean.

    ``spread=True`` (with ``ours`` from :func:`fold_mean`): text cells ``"mean ± std over
    folds"`` for our rows over more than one fold, the mean alone elsewhere.
    """
    import pandas as pd

    if table not in (3, 4):
        raise ValueError(f"table: {table} must be 3 or 4")
    pub = published_frame(table)
    frames = [pub]
    if ours is not None and len(ours):
        frames.append(ours.assign(source=ours_label))
    both = pd.concat(frames, ignore_index=True)
    both = both.assign(organ=both["organ"].map(lambda o: ORGAN_SHORT.get(o, "Mean" if o == "mean" else o)))
    name = "blocks" if table == 3 else "branches"
    wide = both.pivot_table(index=["variant", "source"], columns="organ", values="dice", aggfunc="mean")
    wide = wide[[c for c in [*ORGAN_SHORT.values(), "Mean"] if c in wide.columns]]
    wide.index = wide.index.set_names([name, "source"])
    order = sorted(wide.index, key=lambda i: ((-i[0] if table == 4 else i[0]), i[1] != "published"))
    wide = wide.reindex(order).round(2)
    if not spread or "dice_std" not in both.columns:
        return wide
    n = both["n_folds"] if "n_folds" in both.columns else pd.Series(0, index=both.index)
    std = both.assign(dice_std=both["dice_std"].where(n.fillna(0) > 1)).pivot_table(
        index=["variant", "source"], columns="organ", values="dice_std", aggfunc="mean"
    )
    return _pm_cells(wide, std)


__all__ = [
    "PAPER",
    "ORGANS",
    "ORGAN_SHORT",
    "METHOD_LABELS",
    "METHOD_ORDER",
    "DATASET_LABELS",
    "PUBLISHED",
    "PUBLISHED_METHOD_KEYS",
    "PUBLISHED_INCONSISTENT",
    "published_frame",
    "run_frame",
    "per_scan_frame",
    "summary_variant",
    "load_summaries",
    "summaries_provenance",
    "summary_frame",
    "comparison_table",
    "fold_mean",
    "styled",
    "published_notes_md",
    "ablation_table",
]
