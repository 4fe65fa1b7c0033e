"""How much does the support matter? The result files of issue 22 under ``results/`` and the book's view of them.

Writing (:func:`write_support_results`, ``crapnet support-results RUN ...``): for each trained fold
run, the support-choice sensitivity and the k-shot evaluation
(:mod:`crapnet_core.engine.support`; computed unless the run folder already holds them for its
final checkpoint) are copied, with their provenance, into the run's folder of the per-run
results layout::

    results/<table>/seed<s>/<run_name>/support_sensitivity.json
    results/<table>/seed<s>/<run_name>/kshot.json

(``<table>`` = ``<dataset>_setting<k>_<variant>_<profile>``, :func:`table_name`; ``<run_name>`` =
``ExperimentConfig.run_name()``), next to ``config.json`` and ``metrics.json`` (written when
absent; a folder holding another run's ``config.json`` is refused).

Reading (:func:`load_support_results`) and the statistics the book page shows:

- **Dice against k** (:func:`kshot_frame`): per dataset, method, fold and k the fold's mean Dice
  (organ mean as ``metrics.json``); the page averages the folds that reached k.
- **Support spread** (:func:`spread_frame`): per query the sample SD and the range of its Dice
  over its admissible supports (the organ mean per support), averaged over the queries of a fold.
- **Support against method** (:func:`support_vs_method`): with the same models and queries, the
  paired difference d(q, s) = Dice_A(q, s) - Dice_B(q, s) for every query q and admissible
  support s given to both methods. The method difference of the protocol is the mean over the
  queries of d(q, standard support); the support choice moves the fold's (or the study's) mean
  difference between the mean over queries of min_s d(q, s) (every query gets the support worst
  for A) and of max_s d(q, s). The ranking *survives the choice of support* when the whole
  interval lies on the side of the standard difference; ``share_same_sign`` is the fraction of
  random support assignments (each query one admissible support, uniformly and independently;
  ``N_ASSIGNMENTS`` draws with ``numpy.random.default_rng(ASSIGNMENT_SEED)``) whose mean
  difference has the standard's sign. Next to it, the standard difference's fold-level 95 % interval as
  the study's statistics define it (:func:`crapnet_core.engine.inference.fold_level_test`: folds as
  the unit of replication). Dice as fractions here; the page shows 0-100.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.support import KSHOT_FILE, SENSITIVITY_FILE
from ..io import read_json

#: Random support assignments drawn for ``share_same_sign`` and their seed.
N_ASSIGNMENTS = 20000
ASSIGNMENT_SEED = 0
#: What the book page reads by default: issue 22's two methods and datasets, setting 1, profile lite, seed 0.
PAGE_METHODS = ("crapnet", "alpnet")
PAGE_DATASETS = ("chaos", "sabs")


def table_name(cfg) -> str:
    """``<dataset>_setting<k>_<variant>_<profile>``: the results table a run belongs to."""
    return f"{cfg.dataset_name()}_setting{cfg.data.setting}_{cfg.model.variant_name()}_{cfg.profile}"


#: Sub-folder of the results folder holding the support-choice and k-shot files. They are kept apart from
#: the table's own run folders (``results/<table>/seed<s>/<run_name>/``) because the fold models they
#: evaluate are retrained (the committed tables keep no weights): a retrained fold has the same config
#: hash but, on another machine, not the same Dice (``results/rerun_check*``), so its ``metrics.json``
#: must not sit beside, or replace, the committed one.
SUPPORT_DIR = "support"


def result_folder(results_dir: str | os.PathLike, cfg, table: str | None = None) -> Path:
    """``results/support/<table>/seed<s>/<run_name>/`` of run config ``cfg`` (the per-run layout, under
    :data:`SUPPORT_DIR`)."""
    return Path(results_dir) / SUPPORT_DIR / (table or table_name(cfg)) / f"seed{cfg.train.seed}" / cfg.run_name()


def _commit() -> str | None:
    from ..paths import repo_root

    try:
        root = repo_root()
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 (no checkout, no git: the commit is unknown)
        return None


def _fresh(data: Mapping[str, Any] | None, cfg, step: int, checkpoint: str = "last.pt") -> bool:
    return (
        bool(data)
        and data.get("config_hash") == cfg.config_hash()
        and data.get("checkpoint") == checkpoint
        and data.get("step") == step
    )


def write_support_results(
    run_dirs: Iterable[str | os.PathLike],
    results_dir: str | os.PathLike,
    shots: str = "all",
    device: str | None = None,
    progress: bool = True,
    table: str | None = None,
    command: str | None = None,
) -> list[Path]:
    """Write the sensitivity and k-shot result files of trained fold runs into ``results_dir``.

    For each run folder (``config.json`` + ``checkpoints/last.pt``): ``RUN/support_sensitivity.json``
    and ``RUN/kshot.json`` are computed when missing or made with another checkpoint
    (:func:`crapnet_core.engine.support.evaluate_supports` / ``evaluate_shots`` with ``shots``), then
    written to :func:`result_folder` with a ``provenance`` block (command, commit, machine,
    written_utc, seconds of the evaluations); ``config.json`` and ``metrics.json`` (the standard
    protocol, evaluated without predictions when the run has none) are written there when absent.
    Returns the files written. Raises FileNotFoundError for a folder that is not a trained run and
    ValueError when the results folder holds another run's ``config.json``; holds each run folder's
    lock while it works on it (another process holding it: ``RunFolderBusy`` naming it) and checks
    ``results_dir`` is writable before the first evaluation (``OSError`` naming it).
    """
    from ..engine.checkpoints import latest_checkpoint
    from ..engine.locks import run_lock
    from ..io import check_output_folder
    from .provenance import machine_description

    written: list[Path] = []
    # provenance taken before anything runs: the code and machine of this call (torch's thread settings
    # during the evaluations can narrow the CPU affinity the machine line reports)
    prog = "crapnet" if Path(sys.argv[0]).name in ("crapnet", "__main__.py") else Path(sys.argv[0]).name
    command = command or " ".join([prog, *sys.argv[1:]])
    commit, machine = _commit(), machine_description()
    runs = [Path(r) for r in run_dirs]
    for run in runs:  # check every input before the first (long) evaluation
        if not (run / "config.json").is_file() or latest_checkpoint(run) is None:
            raise FileNotFoundError(f"{run}: not a trained run folder (needs config.json and checkpoints/last.pt)")
    check_output_folder(results_dir, 2**20, what="--results-dir")
    for run in runs:
        with run_lock(run):  # the run's files read and (re)computed by this process only
            written += _support_results_of(run, results_dir, table, shots, device, progress, command, commit, machine)
    return written


def _support_results_of(run: Path, results_dir, table, shots, device, progress, command, commit, machine) -> list[Path]:
    """:func:`write_support_results` for one run folder (its lock held by the caller)."""
    from ..engine import support as sup
    from ..engine.checkpoints import run_checkpoint
    from ..engine.evaluation import evaluate, read_metrics
    from ..engine.experiment import ExperimentConfig
    from ..io import write_json

    written: list[Path] = []
    cfg = ExperimentConfig.load(run / "config.json")
    ckpt, state = run_checkpoint(run, cfg)  # last.pt, or its intact copy of the same step (as the evaluations)
    step = int(state.get("step", -1))
    del state
    folder = result_folder(results_dir, cfg, table)
    old_cfg = folder / "config.json"
    if old_cfg.is_file():
        other = read_json(old_cfg).get("config_hash")
        if other != cfg.config_hash():
            raise ValueError(f"{old_cfg}: holds config {other}, not {cfg.config_hash()} of {run}")
    seconds: dict[str, float] = {}
    data: dict[str, Any] = {}
    current = sup.read_json_or_none(run / sup.SENSITIVITY_FILE)
    if not _fresh(current, cfg, step, ckpt.name):
        t0 = time.time()
        current = sup.evaluate_supports(run, device=device, progress=progress)
        seconds[sup.SENSITIVITY_FILE] = round(time.time() - t0, 1)
    data[sup.SENSITIVITY_FILE] = current
    current = sup.read_json_or_none(run / sup.KSHOT_FILE)
    todo: Any = shots
    if _fresh(current, cfg, step, ckpt.name):  # only the k not there yet (earlier points are kept)
        have = {p["k"] for p in current.get("points", [])}
        todo = [k for k in sup.parse_shots(shots, current["max_shots"]) if k not in have]
    if todo:
        t0 = time.time()
        current = sup.evaluate_shots(run, todo, device=device, progress=progress)
        seconds[sup.KSHOT_FILE] = round(time.time() - t0, 1)
    data[sup.KSHOT_FILE] = current
    if not (run / "metrics.json").is_file():
        evaluate(run, device=device, progress=progress, save_predictions=False)
    metrics = read_metrics(run)
    folder.mkdir(parents=True, exist_ok=True)
    if not old_cfg.is_file():
        written.append(cfg.save(old_cfg))
    if not (folder / "metrics.json").is_file():
        written.append(write_json(folder / "metrics.json", metrics))
    provenance = {
        "command": command,
        "commit": commit,
        "machine": machine,
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "evaluation_seconds_this_call": seconds,
    }
    for name, payload in data.items():
        written.append(write_json(folder / name, {**payload, "provenance": provenance}))
    return written


# ---------------------------------------------------------------------- reading
def load_support_results(
    results_dir: str | os.PathLike,
    profile: str = "lite",
    seed: int = 0,
    setting: int = 1,
    datasets: Sequence[str] = PAGE_DATASETS,
    methods: Sequence[str] = PAGE_METHODS,
) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """{(dataset, method): {fold: {"sensitivity": dict | None, "kshot": dict | None}}} of the files
    under ``results/support/<dataset>_setting<k>_<method>_<profile>/seed<seed>/*/``; pairs without any file
    are left out (an empty dict: nothing has run yet). ValueError naming a file that is not JSON."""
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for ds in datasets:
        for method in methods:
            folder = Path(results_dir) / SUPPORT_DIR / f"{ds}_setting{setting}_{method}_{profile}" / f"seed{seed}"
            folds: dict[int, dict[str, Any]] = {}
            for run in sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []:
                entry = {}
                for key, name in (("sensitivity", SENSITIVITY_FILE), ("kshot", KSHOT_FILE)):
                    path = run / name
                    if path.is_file():
                        entry[key] = read_json(path)
                if entry:
                    fold = int((entry.get("sensitivity") or entry.get("kshot"))["fold"])
                    if fold in folds:
                        raise ValueError(f"{folder}: two run folders for fold {fold} ({run.name})")
                    folds[fold] = {
                        "sensitivity": entry.get("sensitivity"),
                        "kshot": entry.get("kshot"),
                        "run": run.name,
                    }
            if folds:
                out[(ds, method)] = folds
    return out


def missing_md(
    results: Mapping[tuple[str, str], Mapping[int, Any]],
    datasets: Sequence[str] = PAGE_DATASETS,
    methods: Sequence[str] = PAGE_METHODS,
    n_folds: int = 5,
) -> str | None:
    """A Markdown note naming the (dataset, method, fold) result files not there yet; None when all are."""
    from ..facts import DATASET_TITLES, METHOD_LABELS

    lines = []
    for ds in datasets:
        for m in methods:
            folds = results.get((ds, m), {})
            lack = [
                f
                for f in range(n_folds)
                if not (folds.get(f) or {}).get("sensitivity") or not (folds.get(f) or {}).get("kshot")
            ]
            if lack:
                lines.append(
                    f"- {DATASET_TITLES.get(ds, ds)}, {METHOD_LABELS.get(m, m)}: "
                    + ("not run yet" if len(lack) == n_folds else f"folds {', '.join(map(str, lack))} not run yet")
                )
    return "\n".join(lines) if lines else None


def kshot_frame(results: Mapping[tuple[str, str], Mapping[int, Mapping[str, Any]]]):
    """Long frame: dataset, method, fold, k, organ ("mean" = the organ mean), dice (fraction)."""
    import pandas as pd

    rows = []
    for (ds, m), folds in results.items():
        for fold, entry in folds.items():
            for p in (entry.get("kshot") or {}).get("points", []):
                for organ, r in p["per_organ"].items():
                    rows.append(dict(dataset=ds, method=m, fold=fold, k=p["k"], organ=organ, dice=r["dice_mean"]))
                rows.append(dict(dataset=ds, method=m, fold=fold, k=p["k"], organ="mean", dice=p["mean"]["dice"]))
    return pd.DataFrame(rows, columns=["dataset", "method", "fold", "k", "organ", "dice"])


def kshot_table(frame, organ: str = "mean"):
    """Wide table (rows dataset/method, columns k): mean over folds of the fold's Dice (0-100) with the
    number of folds, only for the k every fold of the row reached."""
    import pandas as pd

    f = frame[frame.organ == organ].dropna(subset=["dice"])
    if f.empty:
        return pd.DataFrame()
    n_folds = f.groupby(["dataset", "method"]).fold.nunique()
    g = f.groupby(["dataset", "method", "k"]).agg(dice=("dice", "mean"), sd=("dice", "std"), folds=("fold", "nunique"))
    g = g.reset_index()
    g = g[g.folds == g.apply(lambda r: n_folds[(r.dataset, r.method)], axis=1)]
    g["cell"] = [f"{100 * d:.2f}" + ("" if s != s else f" ± {100 * s:.2f}") for d, s in zip(g.dice, g.sd)]
    return g.pivot(index=["dataset", "method"], columns="k", values="cell")


def kshot_figure(frame, ax=None):
    """Dice (0-100, organ mean, mean over folds) against k: one line per dataset and method."""
    import matplotlib.pyplot as plt

    from ..facts import DATASET_TITLES, METHOD_LABELS

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    f = frame[frame.organ == "mean"].dropna(subset=["dice"])
    for (ds, m), sub in f.groupby(["dataset", "method"]):
        folds = sub.fold.nunique()
        g = sub.groupby("k").agg(dice=("dice", "mean"), n=("fold", "nunique"))
        g = g[g.n == folds]
        ax.plot(g.index, 100 * g.dice, marker="o", label=f"{METHOD_LABELS.get(m, m)}, {DATASET_TITLES.get(ds, ds)}")
    ax.set_xlabel("support scans k")
    ax.set_ylabel("Dice (organ mean, 0-100)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    return ax.figure


def _sensitivities(results: Mapping[tuple[str, str], Mapping[int, Mapping[str, Any]]]):
    """(dataset, method, fold, sensitivity dict) of every fold that has its sensitivity file."""
    for (ds, m), folds in results.items():
        for fold, entry in folds.items():
            if entry.get("sensitivity"):
                yield ds, m, fold, entry["sensitivity"]


def spread_frame(results: Mapping[tuple[str, str], Mapping[int, Mapping[str, Any]]]):
    """Per fold and organ ("mean" = organ mean): the support spread of :func:`sensitivity_stats`
    (``sd``, ``range``, ``standard``, ``worst``, ``best``, ``n_queries``), fractions."""
    import pandas as pd

    rows = [
        dict(dataset=ds, method=m, fold=fold, organ=organ, **r)
        for ds, m, fold, sens in _sensitivities(results)
        for organ, r in sens["per_fold"].items()
    ]
    return pd.DataFrame(rows)


def _paired(sens_a: Mapping[str, Any], sens_b: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """d(q, s) = organ-mean Dice of A minus B, for every query and support both methods scored."""
    from ..engine.support import organ_mean_table

    for key in ("dataset", "setting", "fold", "query_scans", "standard_support"):
        if sens_a.get(key) != sens_b.get(key):
            raise ValueError(
                f"support_vs_method: the two sensitivity files differ in {key} "
                f"({sens_a.get(key)} vs {sens_b.get(key)}); pair runs of the same fold"
            )
    a = organ_mean_table(sens_a["dice"], sens_a["organs"])
    b = organ_mean_table(sens_b["dice"], sens_b["organs"])
    out: dict[str, dict[str, float]] = {}
    for q in a:
        common = [s for s in a[q] if s in b.get(q, {}) and a[q][s] is not None and b[q][s] is not None]
        if common:
            out[q] = {s: float(a[q][s]) - float(b[q][s]) for s in common}
    return out


def _interval(diffs: Mapping[str, Mapping[str, float]], standard: str, rng: np.random.Generator) -> dict[str, Any]:
    queries = [q for q in diffs if standard in diffs[q]]
    if not queries:
        return {"n_queries": 0}
    std = float(np.mean([diffs[q][standard] for q in queries]))
    worst = float(np.mean([min(diffs[q].values()) for q in queries]))
    best = float(np.mean([max(diffs[q].values()) for q in queries]))
    draws = np.zeros(N_ASSIGNMENTS)
    for q in queries:
        vals = np.array(list(diffs[q].values()))
        draws += vals[rng.integers(0, len(vals), size=N_ASSIGNMENTS)]
    draws /= len(queries)
    sign = np.sign(std)
    return {
        "n_queries": len(queries),
        "standard": std,
        "worst": worst,
        "best": best,
        "survives": bool(sign != 0 and np.sign(worst) == sign and np.sign(best) == sign),
        "share_same_sign": float(np.mean(np.sign(draws) == sign)) if sign != 0 else None,
        "pairs_same_sign": float(np.mean([np.sign(v) == sign for q in queries for v in diffs[q].values()]))
        if sign != 0
        else None,
    }


def support_vs_method(
    results: Mapping[tuple[str, str], Mapping[int, Mapping[str, Any]]],
    dataset: str,
    a: str = "crapnet",
    b: str = "alpnet",
) -> dict[str, Any] | None:
    """The support spread next to the method difference A - B on ``dataset`` (module docstring).

    Returns {"folds": {fold: {"support_sd": {a, b}, "support_range": {a, b}, **interval}},
    "all": interval over every query of the folds both methods have} or None when no fold has
    both sensitivity files. ``interval``: n_queries, standard, worst, best, survives,
    share_same_sign, pairs_same_sign (fractions).
    """
    fa, fb = results.get((dataset, a), {}), results.get((dataset, b), {})
    folds = sorted(f for f in fa if f in fb and fa[f].get("sensitivity") and fb[f].get("sensitivity"))
    if not folds:
        return None
    rng = np.random.default_rng(ASSIGNMENT_SEED)
    out: dict[str, Any] = {"folds": {}, "methods": [a, b]}
    pooled: dict[str, dict[str, float]] = {}
    standards = set()
    for f in folds:
        sa, sb = fa[f]["sensitivity"], fb[f]["sensitivity"]
        diffs = _paired(sa, sb)
        std = sa["standard_support"]
        out["folds"][f] = {
            "support_sd": {a: sa["per_fold"]["mean"]["sd"], b: sb["per_fold"]["mean"]["sd"]},
            "support_range": {a: sa["per_fold"]["mean"]["range"], b: sb["per_fold"]["mean"]["range"]},
            **_interval(diffs, std, rng),
        }
        for q, row in diffs.items():  # fold-qualified query keys; the standard support renamed
            pooled[f"{f}:{q}"] = {("standard" if s == std else s): v for s, v in row.items()}
        standards.add(std)
    out["all"] = _interval(pooled, "standard", rng)
    # the protocol's method difference with the study's fold-level statistics (engine.inference)
    from ..engine.inference import fold_level_test

    d = [row["standard"] for row in pooled.values() if "standard" in row]
    g = [key.split(":", 1)[0] for key, row in pooled.items() if "standard" in row]
    test = fold_level_test(d, g)
    out["all"]["fold_level"] = {
        k: test[k] for k in ("n", "n_folds", "mean_diff", "ci_low", "ci_high", "p", "excludes_zero")
    }
    sds = [v for f in folds for v in out["folds"][f]["support_sd"].values() if v is not None]
    out["all"]["support_sd"] = float(np.mean(sds)) if sds else None
    rngs = [v for f in folds for v in out["folds"][f]["support_range"].values() if v is not None]
    out["all"]["support_range"] = float(np.mean(rngs)) if rngs else None
    out["all"]["folds"] = folds
    return out


def support_vs_method_md(
    comparisons: Mapping[str, Mapping[str, Any] | None], a: str = "crapnet", b: str = "alpnet"
) -> str:
    """Markdown table, one row per dataset: support SD and range (mean over queries and both methods),
    the method difference A - B with the standard support, its interval over support choices, and
    whether the ranking survives (Dice points 0-100)."""
    from ..facts import DATASET_TITLES, METHOD_LABELS

    la, lb = METHOD_LABELS.get(a, a), METHOD_LABELS.get(b, b)
    lines = [
        f"| dataset | folds | queries | support SD | support range | {la} − {lb} (fold support) | "
        f"fold-level 95 % interval | over support choices [worst, best] | same sign (random choices) | "
        f"ranking survives |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, c in comparisons.items():
        if not c:
            continue
        r = c["all"]
        share = "–" if r.get("share_same_sign") is None else f"{100 * r['share_same_sign']:.1f} %"
        fl = r.get("fold_level") or {}
        ci = (
            "– (fewer folds than the study's statistics need)"
            if fl.get("ci_low") is None
            else f"[{100 * fl['ci_low']:+.2f}, {100 * fl['ci_high']:+.2f}]"
        )
        lines.append(
            f"| {DATASET_TITLES.get(ds, ds)} | {len(r['folds'])} | {r['n_queries']} | {100 * r['support_sd']:.2f} | "
            f"{100 * r['support_range']:.2f} | {100 * r['standard']:+.2f} | {ci} | [{100 * r['worst']:+.2f}, "
            f"{100 * r['best']:+.2f}] | {share} | {'yes' if r['survives'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "N_ASSIGNMENTS",
    "ASSIGNMENT_SEED",
    "SUPPORT_DIR",
    "PAGE_METHODS",
    "PAGE_DATASETS",
    "table_name",
    "result_folder",
    "write_support_results",
    "load_support_results",
    "missing_md",
    "kshot_frame",
    "kshot_table",
    "kshot_figure",
    "spread_frame",
    "support_vs_method",
    "support_vs_method_md",
]


def recipe_commands(
    datasets: Sequence[str] = PAGE_DATASETS,
    methods: Sequence[str] = PAGE_METHODS,
    profile: str = "lite",
    seed: int = 0,
    setting: int = 1,
) -> list[str]:
    """The commands that produce the page's result files (run from the repository; nice them on a shared machine).

    Per dataset and method: the 5-fold cross-validation (trains the fold runs, or reuses finished
    ones), then :func:`write_support_results` over its fold runs (``crapnet support-results``).
    """
    seed_arg = f" --seed {seed}" if seed else ""
    out = []
    for ds in datasets:
        for m in methods:
            cv = f"runs/study/{ds}_setting{setting}_{m}_{profile}" + (f"@seed{seed}" if seed else "")
            out.append(
                f"crapnet cross-validate --dataset {ds} --setting {setting} --method {m} --profile {profile}"
                f"{seed_arg} --set train.threads=1 --no-progress --out {cv}"
            )
            out.append(f"crapnet support-results {cv} --results-dir results --shots all --no-progress")
    return out


def support_roles(ids: Sequence[Any], n_folds: int = 5):
    """Frame fold x scan of the roles in the protocol: ``train``, ``support`` (the fold's support scan),
    ``query`` (a test scan: queried, and an admissible support of the fold's other queries)."""
    import pandas as pd

    from ..data.protocol import make_fold

    rows = {}
    for f in range(n_folds):
        fold = make_fold(ids, f, n_folds)
        role = {s: "train" for s in fold.train_ids}
        role.update({s: "query" for s in fold.test_ids})
        role[fold.support_id] = "support"
        rows[f] = role
    frame = pd.DataFrame(rows).T
    frame.index.name = "fold"
    return frame[sorted(frame.columns, key=lambda s: (len(s), s))]  # ids in numeric order


def roles_figure(roles, ax=None, title: str | None = None):
    """The :func:`support_roles` grid as a figure: training scans grey, the fold's support scan dark,
    its query scans (the other admissible supports) light."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    codes = {"train": 0, "query": 1, "support": 2}
    colours = ["#d9d9d9", "#9ecae1", "#08519c"]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.28 * roles.shape[1] + 1.5), 0.4 * roles.shape[0] + 1.4))
    ax.imshow(roles.replace(codes).to_numpy(dtype=float), cmap=ListedColormap(colours), vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(roles.shape[1]), roles.columns, fontsize=7)
    ax.set_yticks(range(roles.shape[0]), [f"fold {f}" for f in roles.index], fontsize=8)
    ax.set_xlabel("scan id")
    ax.legend(
        handles=[
            Patch(color=colours[2], label="fold's support scan (standard protocol)"),
            Patch(color=colours[1], label="query scans: each an admissible support of the others"),
            Patch(color=colours[0], label="training scans (never a support)"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        ncol=1,
        fontsize=7,
        frameon=False,
    )
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def query_frame(results: Mapping[tuple[str, str], Mapping[int, Mapping[str, Any]]]):
    """Long frame: dataset, method, fold, query, support, standard (bool), dice (organ mean, fraction)."""
    import pandas as pd

    from ..engine.support import organ_mean_table

    rows = [
        dict(
            dataset=ds,
            method=m,
            fold=fold,
            query=f"{fold}:{q}",
            support=s,
            standard=s == sens["standard_support"],
            dice=v,
        )
        for ds, m, fold, sens in _sensitivities(results)
        for q, row in organ_mean_table(sens["dice"], sens["organs"]).items()
        for s, v in row.items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "method", "fold", "query", "support", "standard", "dice"])


def query_figure(frame, dataset: str, ax=None):
    """Dice (0-100, organ mean) of every query with each admissible support: one column of points per
    query (fold:scan), one colour per method, the fold's support scan as a diamond."""
    import matplotlib.pyplot as plt

    from ..facts import DATASET_TITLES, METHOD_LABELS

    f = frame[(frame.dataset == dataset)].dropna(subset=["dice"])
    queries = sorted(f["query"].unique(), key=lambda s: (int(s.split(":")[0]), len(s), s))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(queries) + 1.5), 3.4))
    x = {q: i for i, q in enumerate(queries)}
    methods = list(dict.fromkeys(f.method))
    for j, m in enumerate(methods):
        sub = f[f.method == m]
        off = (j - (len(methods) - 1) / 2) * 0.25
        colour = f"C{j}"
        for standard, marker, size in ((False, "o", 14), (True, "D", 30)):
            part = sub[sub.standard == standard]
            xs = np.array([x[q] for q in part["query"]]) + off
            ax.scatter(
                xs,
                100 * part.dice,
                s=size,
                marker=marker,
                color=colour,
                alpha=0.85,
                label=f"{METHOD_LABELS.get(m, m)}" + (", fold's support scan" if standard else ", other supports"),
            )
    ax.set_xticks(range(len(queries)), queries, rotation=90, fontsize=7)
    ax.set_xlabel("query (fold:scan)")
    ax.set_ylabel("Dice (organ mean, 0-100)")
    ax.set_title(DATASET_TITLES.get(dataset, dataset), fontsize=9)
    ax.legend(fontsize=8)
    return ax.figure


__all__ += ["recipe_commands", "support_roles", "roles_figure", "query_frame", "query_figure"]
