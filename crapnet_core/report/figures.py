"""Tables, plots and provenance notes for the notebooks of the book.

The notebooks stay thin: they call these helpers. Three groups:

- **Published numbers** (:data:`PUBLISHED`, :func:`published_frame`): Tables 1-4 of the paper
  (Ding et al., WACV 2023) transcribed as data, always labelled ``source="published"`` —
  they are the paper's numbers, never ours.
- **Our numbers as tables** (:func:`run_frame`, :func:`summary_frame`, :func:`comparison_table`):
  long-format ``pandas`` frames with one row per (dataset, setting, method, organ, source).
- **Figures** (:func:`show_overlay`, :func:`example_slices`, :func:`superpixel_panel`,
  :func:`plot_losses`, :func:`plot_per_organ`, :func:`qualitative_figure`) and analysis
  helpers (:func:`best_superpixel_dice`, :func:`superpixel_fit`, :func:`dataset_overview`).
- **Provenance** (:func:`provenance_md`): which profile, data and machine produced a page's
  numbers; the phantom is flagged as synthetic.

Dice is a fraction 0..1 in our metrics files and 0..100 in the paper; the tables here show
0..100 (``dice`` columns) like the paper.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..facts import DATASET_LABELS, METHOD_LABELS, ORGAN_SHORT, ORGANS  # study facts
from ..published import PUBLISHED, PUBLISHED_INCONSISTENT, PUBLISHED_METHOD_KEYS  # the one transcription

#: Overlay colours (RGB 0..1) per organ; other organs get the tab20 palette.
ORGAN_COLORS = {
    "liver": (0.85, 0.37, 0.01),
    "spleen": (0.46, 0.44, 0.70),
    "left_kidney": (0.11, 0.62, 0.47),
    "right_kidney": (0.91, 0.16, 0.54),
}
PAPER = "Ding et al., CRAPNet, WACV 2023"


def set_style(dpi: int = 90) -> None:
    """The book's one figure style (every notebook calls this once, first).

    seaborn's ``whitegrid`` theme with its colour-blind palette, font sizes that stay
    readable when a 11-inch-wide figure is scaled to the book's main column (~800 px), and
    no top/right spines. Axis labels carry units (``Dice (0-100)``, ``mm``, ``ml``, ``s``).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({
        "figure.dpi": dpi, "savefig.dpi": dpi, "figure.max_open_warning": 0,
        "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
        "legend.fontsize": 9, "legend.title_fontsize": 9,
        "axes.spines.top": False, "axes.spines.right": False,
    })

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
                    rows.append(dict(table=table, dataset=dataset, setting=table, method=method,
                                     method_key=_PAPER_TO_KEY.get(method), variant=None, organ=organ,
                                     dice=value, source="published"))
    else:
        for variant, values in data.items():
            for organ, value in zip((*ORGANS, "mean"), values):
                rows.append(dict(table=table, dataset="chaos", setting=1, method="CRAPNet", method_key="crapnet",
                                 variant=variant, organ=organ, dice=value, source="published"))
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
        base = dict(dataset=m.get("dataset"), setting=m.get("setting"), fold=m.get("fold"), method_key=m.get("method"),
                    method=METHOD_LABELS.get(m.get("method"), m.get("method")), profile=m.get("profile"),
                    source=source, variant=variant)
        for organ in m.get("organs", []):
            po = m["per_organ"][organ]
            rows.append(dict(base, organ=organ, dice=_pct(po.get("dice_mean")), dice_std=_pct(po.get("dice_std")),
                             hd95=po.get("hd95_mean"), asd=po.get("asd_mean"), n_scans=po.get("n_scans")))
        mean = m.get("mean", {})
        rows.append(dict(base, organ="mean", dice=_pct(mean.get("dice")), dice_std=None, hd95=mean.get("hd95"),
                         asd=mean.get("asd"), n_scans=None))
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
            rows.append(dict(organ=organ, scan=sid, dice=_pct(r.get("dice")), hd95=r.get("hd95"), asd=r.get("asd"),
                             slices=f"{z[0]}-{z[1]}", note="empty prediction" if r.get("empty_prediction") else ""))
    return pd.DataFrame(rows)


def summary_variant(summary: Mapping[str, Any]) -> str | None:
    """The model variant of a summary: :func:`crapnet_core.models.config.summary_variant`."""
    from ..models.config import summary_variant as variant

    return variant(summary)


def load_summaries(results_dir: str | os.PathLike, profile: str | None = None,
                   variants: bool = False, seed: int | None = None) -> list[dict[str, Any]]:
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
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable summary ({err})") from None
        if profile and not (path.parent.name.endswith(f"_{profile}") or data.get("profile") == profile):
            continue
        data["variant"] = summary_variant(data)
        if not variants and data["variant"] not in (None, data.get("method")):
            continue
        data["_path"] = str(path)
        info = path.parent / "run_info.json"  # written next to the summary: command, machine, wall time
        if info.is_file():
            try:
                data["_run_info"] = json.loads(info.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{info}: not valid JSON ({err})") from None
        out.append(data)
    return out


def summaries_provenance(summaries: Iterable[Mapping[str, Any]]):
    """One row per committed summary: folder, profile, folds, machine, wall time, command."""
    import pandas as pd

    rows = []
    for s in summaries:
        info = s.get("_run_info", {})
        rows.append({
            "results folder": Path(s.get("_path", "?")).parent.name,
            "profile": s.get("profile"),
            "folds": ",".join(str(f) for f in s.get("folds", [])),
            "machine": info.get("machine", "not recorded"),
            "torch": info.get("torch", ""),
            "wall time (s)": info.get("wall_seconds"),
            "command": info.get("command", ""),
        })
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
            raise ValueError(f"{s.get('_path', 'summary')}: no mean.dice table (not a crapnet cross-validate summary)") from None
        std = mean.get("dice_std_over_folds", {})
        if s.get("per_fold"):
            std = {k: v["std"] for k, v in fold_spread(s).items()}
        base = dict(dataset=s.get("dataset"), setting=s.get("setting"), method_key=s.get("method"),
                    method=METHOD_LABELS.get(s.get("method"), s.get("method")), profile=s.get("profile"),
                    folds=",".join(str(f) for f in s.get("folds", [])), n_folds=len(s.get("folds", [])),
                    source=source, variant=None, path=s.get("_path"))
        for organ in [*[o for o in ORGANS if o in dice], "mean"]:
            rows.append(dict(base, organ=organ, dice=_pct(dice.get(organ)), dice_std=_pct(std.get(organ)),
                             hd95=mean.get("hd95", {}).get(organ), asd=mean.get("asd", {}).get(organ)))
    return pd.DataFrame(rows)


def cross_validation(dataset: str, setting: int, method: str, profile: str, folds: Sequence[int],
                     runs_root: str | os.PathLike, overrides: Sequence[str] = (), device: str | None = None,
                     data_root: str | None = None) -> dict[str, Any]:
    """Cross-validate over ``folds`` with runs shared under ``runs_root``; the summary dict.

    :func:`crapnet_core.engine.runs.cross_validate` (one run per fold, setting 2: one per test
    group) with the runs kept under the book's shared ``runs_root`` (so the one-fold pages
    and this reuse each other's runs) and nothing written besides the runs.
    """
    from ..engine.runs import cross_validate

    extra = list(overrides) + ([f"data.data_root={data_root}"] if data_root else [])
    return cross_validate(dataset, setting, method, profile, runs_root, extra, folds=folds, progress=False,
                          device=device, write_summary=False)


def _scale(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return 100.0 * value if value <= 1.0 else value


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
    wide = wide.reindex(sorted(wide.index, key=lambda i: (method_order.index(i[0]) if i[0] in method_order else 99,
                                                          not str(i[1]).startswith("published"), str(i[1]))))
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

    return pd.DataFrame([[cell(wide.iloc[i, j], std.iloc[i, j]) for j in range(wide.shape[1])]
                         for i in range(wide.shape[0])], index=wide.index, columns=wide.columns)


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
        notes.append(f"the paper prints {printed:.2f} as the mean of the row {row}, whose four organs average "
                     f"{actual:.3f}")
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
        index=["variant", "source"], columns="organ", values="dice_std", aggfunc="mean")
    return _pm_cells(wide, std)


# --------------------------------------------------------------------------- provenance
def machine_description() -> str:
    """One line: OS, CPU model and cores, memory, GPU if any (for provenance notes)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        pass
    return f"{platform.system()} {platform.machine()}, {cpu} ({cores} cores){mem}{gpu or ', no GPU'}"


def provenance_md(profile: str, datasets: Sequence[str] | str, data_root: str | None = None,
                  device: str | None = None, what: str = "The numbers on this page",
                  extra: str | None = None) -> str:
    """Markdown note naming the profile, data and machine that produced a page's numbers.

    Real datasets name their folder; the phantom gets a warning box saying it is synthetic.
    """
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    data_parts = []
    for name in names:
        label = DATASET_LABELS.get(name, name)
        if name in ("chaos", "sabs") and data_root:
            sub = {"chaos": "CHAOST2", "sabs": "SABS"}[name]
            label += f" from `{Path(data_root) / sub}`"
        data_parts.append(label)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    dev = f"; training device `{device}`" if device else ""
    lines = [
        f"**Provenance.** {what} were produced by the **`{profile}`** profile on "
        f"**{', '.join(data_parts) or 'no data'}**; machine: {machine_description()}{dev}; executed {when}.",
    ]
    if extra:
        lines += ["", extra]
    if "phantom" in names:
        lines += [
            "",
            ":::{warning}",
            "**Synthetic data.** These numbers come from the built-in phantom, not from patients: they show that "
            "the pipeline runs end to end and say nothing about how the methods segment real organs.",
            ":::",
        ]
    return "\n".join(lines)


def left_out_md(what: str, ran: Iterable[Any], full: Iterable[Any]) -> str:
    """One Markdown line: which of ``full`` this build ran and which it left out."""
    ran, full = list(ran), list(full)
    missing = [x for x in full if x not in ran]
    ran_text = ", ".join(map(str, ran)) or "none"
    if not missing:
        return f"**{what}:** all of {', '.join(map(str, full))} (as the paper)."
    return (f"**{what}:** this build ran {ran_text}; the paper also has {', '.join(map(str, missing))}, "
            "left out by this profile (see *This build*).")


# --------------------------------------------------------------------------- data pages
def window(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Display range of an image: its ``low``/``high`` percentiles (inside the non-zero voxels)."""
    values = np.asarray(image, dtype=np.float64)
    nz = values[values > values.min()] if np.any(values > values.min()) else values.ravel()
    lo, hi = np.percentile(nz, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def organ_color(organ: str, index: int = 0) -> tuple[float, float, float]:
    if organ in ORGAN_COLORS:
        return ORGAN_COLORS[organ]
    import matplotlib

    return tuple(matplotlib.colormaps["tab20"](index % 20)[:3])


def show_overlay(ax, image2d: np.ndarray, label2d: np.ndarray | None = None, labels: Mapping[str, int] | None = None,
                 organs: Sequence[str] | None = None, title: str | None = None, alpha: float = 0.35,
                 contour_only: bool = False, vrange: tuple[float, float] | None = None):
    """Draw an axial slice (grey, percentile window) with organ masks as coloured fills + contours.

    ``image2d``/``label2d``: ``(H, W)`` arrays in crapnet's canonical layout (``image[:, :, z]``,
    rows posterior -> anterior, columns right -> left: :mod:`crapnet_core.data.geometry`); drawn with
    ``origin="lower"``: anterior up, patient's right on the left (radiological display).
    ``labels`` maps organ -> id.
    """
    lo, hi = vrange or window(image2d)
    ax.imshow(np.asarray(image2d), cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    handles = []
    if label2d is not None and labels:
        from matplotlib.patches import Patch

        for i, organ in enumerate(organs or list(labels)):
            if organ not in labels:
                continue
            mask = np.asarray(label2d) == labels[organ]
            if not mask.any():
                continue
            color = organ_color(organ, i)
            if not contour_only:
                rgba = np.zeros((*mask.shape, 4))
                rgba[mask] = (*color, alpha)
                ax.imshow(rgba, origin="lower", interpolation="nearest")
            ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.0, origin="lower")
            handles.append(Patch(color=color, label=organ.replace("_", " ")))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return handles


def dataset_overview(spec, ids: Sequence[str] | None = None):
    """Per-scan table: slices, spacing, intensity percentiles, voxels and volume (ml) per organ.

    Builds on :func:`crapnet_core.data.datasets.summarize`; adds 1st/50th/99th intensity
    percentiles inside the body mask and organ volumes in millilitres.
    """
    import pandas as pd

    from ..data import datasets as ds

    ids = list(ids) if ids is not None else ds.scan_ids(spec)
    rows = ds.summarize(spec, ids)
    for row in rows:
        vol = ds.load_volume(spec, row["scan"])
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        body = vol.image[vol.image > ds.body_threshold_for(spec, vol.image)]
        p1, p50, p99 = np.percentile(body, [1, 50, 99]) if body.size else (np.nan,) * 3
        row.update(spacing_x=float(vol.spacing[0]), spacing_y=float(vol.spacing[1]), spacing_z=float(vol.spacing[2]),
                   p1=float(p1), median=float(p50), p99=float(p99))
        for organ in ORGANS:
            if organ in spec.labels:
                row[f"{organ}_ml"] = row[organ] * voxel_ml
    return pd.DataFrame(rows)


def intensity_samples(spec, ids: Sequence[str], per_scan: int = 20000, seed: int = 0):
    """Long frame of sampled raw intensities per scan and region (body / organ names)."""
    import pandas as pd

    from ..data import datasets as ds

    rng = np.random.default_rng(seed)
    frames = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        regions = {"body (unlabelled)": (vol.image > ds.body_threshold_for(spec, vol.image)) & (vol.label == 0)}
        for organ in ORGANS:
            if organ in spec.labels:
                regions[organ.replace("_", " ")] = vol.label == spec.labels[organ]
        for region, mask in regions.items():
            values = vol.image[mask]
            if values.size == 0:
                continue
            take = rng.choice(values.size, size=min(per_scan, values.size), replace=False)
            frames.append(pd.DataFrame({"scan": sid, "region": region, "intensity": values[take]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["scan", "region", "intensity"])


def middle_slice(volume, organ_id: int) -> int | None:
    """The slice in the middle of the organ's slice range (None when absent)."""
    zs = volume.slices_with_label(organ_id)
    return int(zs[len(zs) // 2]) if len(zs) else None


def example_slices(spec, ids: Sequence[str], organs: Sequence[str] = ORGANS, size: float = 2.6):
    """Figure: one row per scan, one column per organ, the organ's middle slice with all labels."""
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    organs = [o for o in organs if o in spec.labels]
    fig, axes = plt.subplots(len(ids), len(organs), figsize=(size * len(organs), size * len(ids)), squeeze=False)
    handles = []
    for r, sid in enumerate(ids):
        vol = ds.load_volume(spec, sid)
        for c, organ in enumerate(organs):
            ax = axes[r][c]
            z = middle_slice(vol, spec.labels[organ])
            if z is None:
                ax.set_axis_off()
                ax.set_title(f"scan {sid}: no {organ.replace('_', ' ')}", fontsize=9)
                continue
            h = show_overlay(ax, vol.image[:, :, z], vol.label[:, :, z], spec.labels, organs,
                             title=f"scan {sid}, z={z} ({organ.replace('_', ' ')})")
            if len(h) > len(handles):
                handles = h
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# --------------------------------------------------------------------------- superpixels
def best_superpixel_dice(superpixels2d: np.ndarray, mask2d: np.ndarray) -> tuple[float, int]:
    """Dice (0..1) of the single superpixel that best matches ``mask2d``, and its label.

    Superpixel 0 (outside the body) is never chosen. Dice_k = 2|S_k ∩ M| / (|S_k| + |M|),
    computed for every k at once with ``np.bincount``. Returns (0.0, 0) for an empty mask
    or a slice without superpixels.
    """
    sp = np.asarray(superpixels2d).astype(np.int64).ravel()
    mask = np.asarray(mask2d).astype(bool).ravel()
    if sp.shape != mask.shape:
        raise ValueError(f"superpixels {np.shape(superpixels2d)} and mask {np.shape(mask2d)} differ in shape")
    m = int(mask.sum())
    if m == 0 or sp.max(initial=0) == 0:
        return 0.0, 0
    n = int(sp.max()) + 1
    sizes = np.bincount(sp, minlength=n).astype(np.float64)
    inter = np.bincount(sp[mask], minlength=n).astype(np.float64)
    dice = 2.0 * inter / (sizes + m)
    dice[0] = -1.0
    k = int(np.argmax(dice))
    return float(max(dice[k], 0.0)), k


def superpixel_fit(spec, ids: Sequence[str], organs: Sequence[str] = ORGANS):
    """Per (scan, organ, slice): the best single superpixel's Dice with the organ, and the organ's area.

    A measure of how well the pseudo-labels of the self-supervision could stand for organs:
    1.0 would mean some superpixel is exactly the organ's cross-section.
    """
    import pandas as pd

    from ..data import datasets as ds
    from ..data.superpixels import load_superpixels

    rows = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        sp = load_superpixels(spec, sid)
        for organ in organs:
            if organ not in spec.labels:
                continue
            lid = spec.labels[organ]
            for z in vol.slices_with_label(lid):
                mask = vol.label[:, :, z] == lid
                dice, _ = best_superpixel_dice(sp[:, :, z], mask)
                rows.append(dict(scan=sid, organ=organ, z=int(z), dice=100.0 * dice, area_px=int(mask.sum())))
    return pd.DataFrame(rows)


def superpixel_counts(spec, ids: Sequence[str]):
    """Per (scan, slice): number of superpixels and body area (pixels)."""
    import pandas as pd

    from ..data import datasets as ds
    from ..data.superpixels import load_superpixels

    rows = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        sp = load_superpixels(spec, sid)
        for z in range(vol.n_slices):
            s = sp[:, :, z]
            rows.append(dict(scan=sid, z=z, superpixels=int(len(np.unique(s[s > 0]))), body_px=int((s > 0).sum())))
    return pd.DataFrame(rows)


def superpixel_panel(spec, sid: str, z: int, size: float = 3.2):
    """Figure: the slice, its body mask, its superpixels (boundaries) and the organs on top."""
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from ..data import datasets as ds
    from ..data.superpixels import body_mask, load_superpixels

    vol = ds.load_volume(spec, sid)
    sp = load_superpixels(spec, sid)[:, :, z]
    img = vol.image[:, :, z]
    lo, hi = window(img)
    fig, axes = plt.subplots(1, 4, figsize=(4 * size, size))
    show_overlay(axes[0], img, title=f"scan {sid}, slice {z}", vrange=(lo, hi))
    thr = ds.body_threshold_for(spec, vol.image)
    show_overlay(axes[1], img, title=f"body mask (> {thr:.4g})", vrange=(lo, hi))
    body = body_mask(img, thr)
    rgba = np.zeros((*body.shape, 4))
    rgba[body] = (0.2, 0.6, 1.0, 0.35)
    axes[1].imshow(rgba, origin="lower")
    rng = np.random.default_rng(0)
    palette = rng.random((int(sp.max()) + 1, 3))
    palette[0] = 0
    axes[2].imshow(palette[sp], origin="lower", interpolation="nearest")
    axes[2].set_title(f"{len(np.unique(sp[sp > 0]))} superpixels", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    show_overlay(axes[3], img, vol.label[:, :, z], spec.labels, ORGANS, title="boundaries + organs",
                 contour_only=True, vrange=(lo, hi))
    edges = find_boundaries(sp, mode="inner") & (sp > 0)
    rgba = np.zeros((*edges.shape, 4))
    rgba[edges] = (1.0, 1.0, 0.0, 0.8)
    axes[3].imshow(rgba, origin="lower", interpolation="nearest")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training pages
_LOSS_NAMES = {"loss": "total", "total": "total", "seg": "segmentation (CE)", "align": "alignment (PAR)"}


def plot_losses(rows: Sequence[Mapping[str, float]], ax=None, smooth: int = 0, title: str | None = None):
    """Loss curves (total, segmentation, alignment) against the step; optional moving average."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.4))
    if not rows:
        ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center", transform=ax.transAxes)
        return ax
    steps = np.array([r["step"] for r in rows])
    n = len(rows)
    k = smooth or max(1, n // 25)
    # training.CSV_COLUMNS: step, loss (the total of Eq. 20), seg, align, lr, seconds
    for key, style in (("loss", "-"), ("total", "-"), ("seg", "--"), ("align", ":")):
        if key not in rows[0]:
            continue
        y = np.array([r[key] for r in rows], dtype=float)
        if k > 1 and n >= k:
            y_s = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], y_s, style, label=f"{_LOSS_NAMES.get(key, key)} (mean of {k})")
        else:
            ax.plot(steps, y, style, label=_LOSS_NAMES.get(key, key))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_per_organ(frame, hue: str = "label", ax=None, title: str | None = None):
    """Grouped bars: Dice per organ (LK, RK, Spleen, Liver, Mean), one bar per ``hue`` value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    df = frame.assign(organ=frame["organ"].map(lambda o: ORGAN_SHORT.get(o, "Mean" if o == "mean" else o)))
    order = [o for o in [*ORGAN_SHORT.values(), "Mean"] if o in set(df["organ"])]
    sns.barplot(data=df, x="organ", y="dice", hue=hue, order=order, ax=ax, errorbar=None)
    ax.set_ylabel("Dice (0-100)")
    ax.set_xlabel("")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_organ_panels(frame, x: str = "method", hue: str = "source", title: str | None = None,
                      size: tuple[float, float] = (2.3, 3.1)):
    """One panel per organ (LK, RK, Spleen, Liver) plus the mean: Dice bars per ``x``, coloured by ``hue``.

    ``frame`` is a long frame with columns organ, dice (0..100), ``x`` and ``hue`` (e.g. our
    rows and the published rows of :func:`published_frame`).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    organs = [o for o in (*ORGANS, "mean") if o in set(frame["organ"])]
    if not organs:
        raise ValueError("plot_organ_panels: the frame has no rows for LK, RK, Spleen, Liver or the mean")
    fig, axes = plt.subplots(1, len(organs), figsize=(size[0] * len(organs), size[1]), sharey=True, squeeze=False)
    x_order = list(dict.fromkeys(frame[x]))
    hue_order = list(dict.fromkeys(frame[hue]))
    palette = dict(zip(hue_order, sns.color_palette("deep", len(hue_order))))
    for i, (ax, organ) in enumerate(zip(axes[0], organs)):
        sub = frame[frame["organ"] == organ]
        sns.barplot(data=sub, x=x, y="dice", hue=hue, order=x_order, hue_order=hue_order, palette=palette,
                    ax=ax, errorbar=None)
        ax.set_title(ORGAN_SHORT.get(organ, "Mean"), fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("Dice (0-100)" if i == 0 else "")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=40, labelsize=8)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.12 + 0.04 * ((len(labels) - 1) // 3), 1, 1))
    return fig


#: The component decomposition (issue 8 section 4): model variant -> its row label, in the order of the
#: book's table (SSL-ALPNet, + attention, + CARAFE++ prototypes, both = CRAPNet, CRAPNet aligned window).
DECOMPOSITION = {"alpnet": "SSL-ALPNet", "alpnet-att": "SSL-ALPNet\n+ attention", "alpnet-carafe": "SSL-ALPNet\n+ CARAFE++",
                 "crapnet": "CRAPNet", "crapnet-aligned": "CRAPNet,\naligned window"}


def _decomposition_points(summaries: Iterable[Mapping[str, Any]], dataset: str, setting: int):
    """(variant, fold, mean Dice 0-100) of every fold of the summaries of ``dataset`` / ``setting`` whose
    variant is a row of :data:`DECOMPOSITION`."""
    for s in summaries:
        variant = s.get("variant") or summary_variant(s)
        if s.get("dataset") != dataset or int(s.get("setting", 0)) != setting or variant not in DECOMPOSITION:
            continue
        for fold, entry in (s.get("per_fold") or {}).items():
            value = (entry.get("dice") or {}).get("mean")
            if value is not None:
                yield variant, str(fold), 100 * float(value)


def has_decomposition(summaries: Iterable[Mapping[str, Any]], dataset: str = "chaos", setting: int = 1) -> bool:
    """Whether ``summaries`` hold a component row of :data:`DECOMPOSITION` (one beyond the two end points,
    SSL-ALPNet and CRAPNet, which every results folder has) for ``dataset`` / ``setting``: when False,
    :func:`decomposition_figure` would only repeat the main comparison."""
    return any(variant not in ("alpnet", "crapnet") for variant, *_ in _decomposition_points(summaries, dataset, setting))


def decomposition_figure(summaries: Iterable[Mapping[str, Any]], dataset: str = "chaos", setting: int = 1,
                         fig=None, size: tuple[float, float] = (7.0, 3.6)):
    """Mean Dice over organs of each decomposition row, one point per fold joined across the rows.

    ``summaries``: e.g. :func:`load_summaries` ``(results, "lite", variants=True, seed=0)``; those of
    ``dataset`` / ``setting`` whose variant is in :data:`DECOMPOSITION` are drawn (bars: mean over
    folds, error bars: standard deviation over folds, ddof=1; Dice 0-100). ValueError when none is.
    Returns the figure.
    """
    import pandas as pd
    import seaborn as sns

    rows = [{"row": DECOMPOSITION[variant], "fold": fold, "dice": dice}
            for variant, fold, dice in _decomposition_points(summaries, dataset, setting)]
    if not rows:
        raise ValueError(f"decomposition_figure: no decomposition summary for {dataset} setting {setting}")
    frame = pd.DataFrame(rows)
    order = [label for label in DECOMPOSITION.values() if label in set(frame["row"])]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure()
    fig.set_size_inches(*size)
    ax = fig.subplots()
    sns.barplot(data=frame, x="row", y="dice", order=order, errorbar=("sd", 1), color="0.85", edgecolor="0.4",
                capsize=0.15, ax=ax)
    sns.pointplot(data=frame, x="row", y="dice", order=order, hue="fold", palette="colorblind", errorbar=None,
                  markersize=4, linewidth=0.8, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("mean Dice over organs (0-100)")
    ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, setting {setting}: bars mean ± std over folds, lines one fold",
                 fontsize=9)
    ax.legend(title="fold", fontsize=8, title_fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(ours, fig=None, size: tuple[float, float] = (3.0, 3.4)):
    """Mean Dice over the four organs per method, ours next to the published (Tables 1-2), one panel per
    (dataset, setting) of ``ours``; every panel of the paper when ``ours`` is empty or None.

    ``ours``: long frame (:func:`summary_frame` / :func:`run_frame`) with dataset, setting,
    method_key, method, organ, dice (0..100) and source. Our bars carry the standard
    deviation over folds as error bars when ``dice_std`` is present. ``fig``: an existing
    ``matplotlib.figure.Figure`` to draw into (the book builder draws without pyplot);
    default a new pyplot figure. Returns the figure.
    """
    import pandas as pd
    import seaborn as sns

    pub = pd.concat([published_frame(1), published_frame(2)], ignore_index=True)
    pub = pub[(pub["organ"] == "mean") & pub["method_key"].notna()]
    if ours is not None and len(ours):
        mine = ours[ours["organ"] == "mean"]
        panels = list(dict.fromkeys(zip(mine["dataset"], mine["setting"])))
    else:
        mine = None
        panels = [(d, s) for s in (1, 2) for d in ("chaos", "sabs")]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure()
    fig.set_size_inches(size[0] * len(panels) + 0.6, size[1])
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for i, (ax, (dataset, setting)) in enumerate(zip(axes, panels)):
        ref = dataset if dataset in ("chaos", "sabs") else "chaos"
        p = pub[(pub["dataset"] == ref) & (pub["setting"] == setting)].assign(source="published")
        frames = [p]
        if mine is not None:
            frames.append(mine[(mine["dataset"] == dataset) & (mine["setting"] == setting)])
        both = pd.concat(frames, ignore_index=True)
        both["label"] = both["method_key"].map(METHOD_LABELS)
        order = [k for k in METHOD_ORDER if k in set(both["method_key"])]  # this panel's methods
        sources = list(dict.fromkeys(both["source"]))
        colors = dict(zip(sources, sns.color_palette("colorblind", len(sources))))
        sns.barplot(data=both, x="label", y="dice", hue="source", order=[METHOD_LABELS[k] for k in order],
                    hue_order=sources, palette=colors, errorbar=None, ax=ax)
        if "dice_std" in both:  # spread over folds, where the summary gives it
            for j, src in enumerate(sources):
                rows = both[(both["source"] == src) & both["dice_std"].notna()]
                for _, r in rows.iterrows():
                    x = order.index(r["method_key"]) + (j - (len(sources) - 1) / 2) * 0.8 / len(sources)
                    ax.errorbar(x, r["dice"], yerr=r["dice_std"], color="black", capsize=2, lw=0.8)
        name = DATASET_LABELS.get(dataset, dataset)
        ax.set_title(f"{name}\nsetting {setting}" + (" (published: MRI)" if ref != dataset else ""), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("mean Dice over organs (0-100)" if i == 0 else "")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        legend = ax.get_legend()
        if legend is not None:
            if i == len(panels) - 1:
                legend.set_title(None)
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8)
            else:
                legend.remove()
    fig.tight_layout()
    return fig


def load_prediction(run_dir: str | os.PathLike, volume, organ: str) -> np.ndarray | None:
    """A run's saved prediction ``predictions/<scan>_<organ>.nii.gz`` on the model grid of ``volume`` (None if absent).

    Saved predictions are on the file's grid and axis order; they are mapped like the label.
    """
    import nibabel as nib

    from ..engine.evaluation import prediction_file_name

    path = Path(run_dir) / "predictions" / prediction_file_name(volume.scan_id, organ)
    if not path.is_file():
        return None
    arr = np.asarray(nib.load(str(path)).dataobj)
    return volume.geometry.label_to_model(arr) > 0


def prediction_figure(spec, run_dir: str | os.PathLike, metrics: Mapping[str, Any], max_scans: int = 2,
                      size: float = 2.6):
    """Figure: for each organ (rows) and a few test scans (columns), GT contour + prediction at mid slice."""
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    organs = list(metrics.get("organs", []))
    scans = list(metrics.get("test_scans", []))[:max_scans]
    fig, axes = plt.subplots(len(organs), len(scans), figsize=(size * len(scans) * 1.0, size * len(organs)),
                             squeeze=False)
    for r, organ in enumerate(organs):
        for c, sid in enumerate(scans):
            ax = axes[r][c]
            vol = ds.load_volume(spec, sid)
            z = middle_slice(vol, spec.labels[organ])
            pred = load_prediction(run_dir, vol, organ)
            if z is None or pred is None:
                ax.set_axis_off()
                ax.set_title(f"{organ.replace('_', ' ')}, scan {sid}: n/a", fontsize=8)
                continue
            gt = vol.label[:, :, z] == spec.labels[organ]
            d = 100 * _dice2d(pred[:, :, z], gt)
            _pred_panel(ax, vol.image[:, :, z], gt, pred[:, :, z], organ,
                        f"{organ.replace('_', ' ')}, scan {sid}, z={z}\nslice Dice {d:.1f}")
    fig.tight_layout()
    return fig


def _dice2d(pred: np.ndarray, gt: np.ndarray) -> float:
    s = pred.sum() + gt.sum()
    return float(2.0 * np.logical_and(pred, gt).sum() / s) if s else 1.0


def _pred_panel(ax, image2d, gt, pred, organ, title, show_gt: bool = True):
    show_overlay(ax, image2d, title=title)
    color = organ_color(organ)
    if pred is not None and pred.any():
        rgba = np.zeros((*pred.shape, 4))
        rgba[pred] = (*color, 0.45)
        ax.imshow(rgba, origin="lower", interpolation="nearest")
    if show_gt and gt is not None and gt.any():
        ax.contour(gt.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.9, origin="lower")


def qualitative_figure(spec, runs: Mapping[str, str | os.PathLike], metrics: Mapping[str, Mapping[str, Any]],
                       organs: Sequence[str] = ORGANS, size: float = 2.4):
    """The analogue of the paper's Fig. 3: rows = organs; columns = image, ground truth, each method.

    ``runs``/``metrics`` map a method key to its run folder / ``metrics.json`` (same fold and
    setting). Each row shows the middle slice of the organ in the first test scan where every
    method has a prediction; each method panel prints that slice's Dice.
    """
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    methods = list(runs)
    organs = [o for o in organs if o in spec.labels]
    ncol = 2 + len(methods)
    fig, axes = plt.subplots(len(organs), ncol, figsize=(size * ncol, size * len(organs)), squeeze=False)
    for r, organ in enumerate(organs):
        lid = spec.labels[organ]
        chosen = None
        scans = next(iter(metrics.values())).get("test_scans", []) if metrics else []
        for sid in scans:
            vol = ds.load_volume(spec, sid)
            z = middle_slice(vol, lid)
            preds = {m: load_prediction(runs[m], vol, organ) for m in methods}
            if z is not None and all(p is not None for p in preds.values()):
                chosen = (vol, z, preds)
                break
        if chosen is None:
            for ax in axes[r]:
                ax.set_axis_off()
            axes[r][0].set_title(f"{organ.replace('_', ' ')}: no prediction", fontsize=8)
            continue
        vol, z, preds = chosen
        img = vol.image[:, :, z]
        gt = vol.label[:, :, z] == lid
        show_overlay(axes[r][0], img, title=f"{ORGAN_SHORT[organ] if organ in ORGAN_SHORT else organ}: "
                                            f"scan {vol.scan_id}, z={z}")
        _pred_panel(axes[r][1], img, None, gt, organ, "ground truth", show_gt=False)
        for c, m in enumerate(methods):
            p = preds[m][:, :, z]
            _pred_panel(axes[r][2 + c], img, gt, p, organ,
                        f"{METHOD_LABELS.get(m, m)}  (Dice {100 * _dice2d(p, gt):.1f})")
    fig.tight_layout()
    return fig


__all__ = [
    "set_style", "ORGANS", "ORGAN_SHORT", "METHOD_LABELS", "METHOD_ORDER", "DECOMPOSITION", "decomposition_figure", "has_decomposition", "DATASET_LABELS", "PUBLISHED", "PUBLISHED_METHOD_KEYS",
    "PUBLISHED_INCONSISTENT",
    "published_frame", "run_frame", "per_scan_frame", "load_summaries", "summaries_provenance", "summary_frame", "cross_validation", "comparison_table", "fold_mean", "styled", "published_notes_md",
    "ablation_table", "provenance_md", "left_out_md", "machine_description", "window", "show_overlay",
    "dataset_overview", "intensity_samples", "middle_slice", "example_slices", "best_superpixel_dice",
    "superpixel_fit", "superpixel_counts", "superpixel_panel", "plot_losses", "plot_per_organ", "plot_organ_panels", "comparison_figure",
    "load_prediction", "prediction_figure", "qualitative_figure",
]
