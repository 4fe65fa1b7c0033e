"""The generated sentences of the book's pages and of ``results/README.md``: every number from a file.

Each function returns one block of Markdown for :mod:`crapnet_core.report.collect` (names in
:data:`crapnet_core.report.collect.PAGES`). The wording that states a conclusion is chosen from the
calls of the declared rule (:mod:`crapnet_core.engine.decision`), so a sentence changes when the
evidence does; every number is read from ``results/`` (summaries, the cached comparisons, the
diagnostics, the selection trials, the budget curves) or from the configs and the paper's
published tables (:mod:`crapnet_core.published`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..facts import METHOD_LABELS
from ..io import read_json
from .sentence_parts import (
    calls_by_call,
    comparison_name,
    comparison_where,
    count_md,
    diff_md,
    entry_mean_row,
    find_comparison,
    fold_diffs,
    num,
    range_md,
    read_summary,
    summary_mean,
)
from .stats_tables import DATASET_SHORT, call_md, ci, pts, pval, table_label


# ---------------------------------------------------------------------- equal_budget.md
def selection(results: Path, readme: bool = False) -> str:
    """How `lite` was chosen: the validation trials, the validation scan and its fold."""
    t = read_json(results / "select_lite" / "trials.json")
    avg = t["method_average"]
    rows = {(r["trial"], r["method"]): r for r in t["rows"]}
    scans = sorted({s for r in t["rows"] for s in r["validation_scans"]}, key=int)
    chosen, other = t["chosen"], next(k for k in avg if k != t["chosen"])
    fold_of = _fold_of_scans(results)
    folds = sorted({fold_of.get(s) for s in scans if s in fold_of})
    scan_text = ", ".join(scans)
    where = (
        f"scan{'s' * (len(scans) > 1)} {scan_text}, a test scan of fold {', '.join(map(str, folds))} of the "
        f"5-fold protocol"
        if folds
        else f"scan {scan_text}"
    )

    def trial(k):
        return (
            f"{num(100 * avg[k]['mean_dice'], 2)}: CRAPNet {num(100 * rows[(k, 'crapnet')]['mean_dice'], 2)}, "
            f"SSL-ALPNet {num(100 * rows[(k, 'alpnet')]['mean_dice'], 2)}"
        )

    text = (
        f"The `lite` profile was chosen on one validation scan held out of the training of CHAOS fold 0 "
        f"({where}), by a rule fixed before running (`results/select_lite/trials.md`): {chosen} "
        f"(method-averaged validation Dice {trial(chosen)}) against {other} ({trial(other)}), at an equal budget. "
        f"The choice rested on this one scan, and the difference between the candidates came from one method "
        f"(SSL-ALPNet scored {num(100 * rows[(chosen, 'alpnet')]['mean_dice'], 2)} and "
        f"{num(100 * rows[(other, 'alpnet')]['mean_dice'], 2)}). The validation scan was held out of fold 0's "
        f"training only; as a test scan of fold {', '.join(map(str, folds)) or '?'} it also enters the 5-fold "
        "means (a different model tests it there)."
    )
    return text + "\n"


def _fold_of_scans(results: Path) -> dict[str, int]:
    s = read_summary(results, "chaos_setting1_crapnet_lite", seed=0)
    out = {}
    for f, e in (s or {}).get("per_fold", {}).items():
        for scans in (e.get("per_scan") or {}).values():
            out.update({sid: int(f) for sid in scans})
    return out


def main_text(results: Path, an: Mapping) -> str:
    fam = an["families"]["main"]
    e = {
        (ds, a, b): find_comparison(an, "main", f"{ds}_setting1_{a}_lite", f"{ds}_setting1_{b}_lite")
        for ds in ("chaos", "sabs")
        for a, b in (("crapnet", "alpnet"), ("crapnet", "panet"), ("alpnet", "panet"))
    }
    c = calls_by_call(fam)
    ca, sa = e[("chaos", "crapnet", "alpnet")], e[("sabs", "crapnet", "alpnet")]
    lines = [
        f"CRAPNet − SSL-ALPNet, three seeds, is {diff_md(ca)} on CHAOS and {diff_md(sa)} on Synapse CT "
        "(Dice points, fold-level 95 % interval, call)."
    ]
    n_res, n_weak = len(c["resolved"]), len(c["weak"])
    lines.append(
        f"Of the {fam['m']} comparisons of the family, {count_md(n_res, 'resolved')} and {count_md(n_weak, 'weak')}"
        + (
            ": "
            + "; ".join(
                f"{comparison_name(x)} on {comparison_where(x)} ({diff_md(x)})" for x in c["resolved"] + c["weak"]
            )
            if n_res + n_weak
            else ""
        )
        + "."
    )
    flipped = [
        x
        for k, x in e.items()
        if x
        and entry_mean_row(x)["scan_ci_low"] is not None
        and (entry_mean_row(x)["scan_ci_low"] > 0 or entry_mean_row(x)["scan_ci_high"] < 0)
        and x["call"] != "resolved"
    ]
    for x in flipped:
        r = entry_mean_row(x)
        lines.append(
            f"{comparison_name(x)} on {comparison_where(x)} was *resolved* by the per-scan test of the earlier pages "
            f"(per-scan interval {ci(r['scan_ci_low'], r['scan_ci_high'])}); at the fold level its interval is "
            f"{ci(r['ci_low'], r['ci_high'])}: the scans of a fold share one model (intra-fold correlation of "
            f"the paired differences {num(r['icc'], 2)}, design effect {num(r['design_effect'], 1)}), so the "
            "scans carry less information than as many independent ones."
        )
    seeds_sd, folds_sd = [], []
    for ds in ("chaos", "sabs"):
        for m in ("crapnet", "alpnet", "panet"):
            s = read_summary(results, f"{ds}_setting1_{m}_lite")
            if s and s.get("seeds"):
                seeds_sd.append(s["mean"]["dice_std_over_seeds"]["mean"])
                folds_sd.append(s["mean"]["dice_std_over_folds"]["mean"])
    bands = {k.split("/")[0]: v for k, v in an["bands"].items() if k.endswith("/lite") and v}
    if seeds_sd:
        lines.append(
            f"The training seed moves a method's 5-fold mean by {range_md(seeds_sd, 1)} points (standard "
            f"deviation over three seeds), the folds by {range_md(folds_sd, 1)}."
        )
    if bands:
        n_pairs = sum(len(b["pairs"]) for b in bands.values())
        n_fold = sum(p["excludes_zero"] for b in bands.values() for p in b["pairs"])
        n_scan = sum(p["scan_ci_low"] > 0 or p["scan_ci_high"] < 0 for b in bands.values() for p in b["pairs"])
        lines.append(
            "Compared with itself seed against seed, a method differs by up to "
            + " and ".join(f"{num(100 * b['max_abs_diff'], 2)} points on {DATASET_SHORT[d]}" for d, b in bands.items())
            + f"; of these {n_pairs} comparisons of equal methods the per-scan interval excludes 0 in {n_scan}, "
            f"the fold-level interval in {n_fold}. The seed band (the 95 % range of such a difference) is "
            + " and ".join(f"± {num(100 * b['band'], 2)} on {DATASET_SHORT[d]}" for d, b in bands.items())
            + ": no one-seed difference inside it is called resolved."
        )
    organs = [
        r for r in (ca or {}).get("result", {}).get("rows", []) if r["organ"] != "mean" and r["call"] != "not resolved"
    ]
    if ca:
        lines.append(
            "By organ (Holm over the four organs), CRAPNet − SSL-ALPNet on CHAOS is "
            + (
                "; ".join(
                    f"{r['organ'].replace('_', ' ')} "
                    f"{pts(r['mean_diff'])} {ci(r['ci_low'], r['ci_high'])}, {call_md(r['call'])}"
                    for r in organs
                )
                if organs
                else "not resolved for any organ"
            )
            + " (per-organ rows: `crapnet compare --family main`)."
        )
    return " ".join(lines) + "\n"


def setting2_text(results: Path, an: Mapping) -> str:
    fam = an["families"]["setting2"]
    drops = []
    for m in ("crapnet", "alpnet", "panet"):
        s1, s2 = (
            summary_mean(read_summary(results, f"chaos_setting1_{m}_lite")),
            summary_mean(read_summary(results, f"chaos_setting2_{m}_lite")),
        )
        if s1 is not None and s2 is not None:
            drops.append(s1 - s2)
    ca = find_comparison(an, "setting2", "chaos_setting2_crapnet_lite", "chaos_setting2_alpnet_lite")
    cp = find_comparison(an, "setting2", "chaos_setting2_crapnet_lite", "chaos_setting2_panet_lite")
    c = calls_by_call(fam)
    text = []
    if drops:
        text.append(
            f"On CHAOS, setting 2 costs every method {range_md(drops, 1)} points against setting 1 (fewer "
            "training slices, and none that show the test organ)."
        )
    text.append(
        f"CRAPNet − SSL-ALPNet is {diff_md(ca)} on CHAOS and CRAPNet − SSL-PANet {diff_md(cp)} (one seed each). "
        f"Of the family's {fam['m']} comparisons, {count_md(len(c['resolved']), 'resolved')} and "
        f"{count_md(len(c['weak']), 'weak')}."
    )
    was = [
        x
        for x in fam["comparisons"]
        if x.get("result") and entry_mean_row(x)["scan_ci_low"] > 0 and x["call"] != "resolved"
    ]
    if was:
        text.append(
            "The per-scan test had called "
            + ", ".join(f"{comparison_name(x)} on {comparison_where(x)}" for x in was)
            + " resolved; with the fold as the unit, Holm over the family and the seed band, "
            + ("none of them is" if len(was) > 1 else "it is not")
            + "."
        )
    return " ".join(text) + "\n"


def decomposition_text(results: Path, an: Mapping) -> str:
    get = lambda a, b: find_comparison(an, "decomposition", f"chaos_setting1_{a}_lite", f"chaos_setting1_{b}_lite")  # noqa: E731
    att, car = get("alpnet-attention", "alpnet"), get("alpnet-carafe", "alpnet")
    both, aligned = get("crapnet", "alpnet"), get("crapnet-aligned", "crapnet")
    out = []
    for e, what in (
        (att, "The attention blocks added to SSL-ALPNet"),
        (car, "The CARAFE++ prototypes added to SSL-ALPNet"),
    ):
        if e is None:
            continue
        f = fold_diffs(results, e)
        sign = np.sign(entry_mean_row(e)["mean_diff"])
        out.append(
            f"{what}: {diff_md(e)}; the per-fold differences run from {range_md(f, 1)} points, "
            f"{sum(np.sign(x) == sign for x in f)} of {len(f)} folds in the direction of the mean."
        )
    if both:
        f = fold_diffs(results, both)
        out.append(
            f"CRAPNet, which has both, against SSL-ALPNet (seed 0): {diff_md(both)} (per fold {range_md(f, 1)})."
        )
    if aligned:
        out.append(f"Aligning the CARAFE++ window with the cell it summarises: {diff_md(aligned)} against CRAPNet.")
    out.append(
        "All five rows are training seed 0 of one commit, compared seed 0 against seed 0 (the family's "
        "seed band applies). The figure with one line per fold is in the *Component decomposition* section of "
        "the [results page](results.md)."
    )
    return " ".join(out) + "\n"


def diagnostics(results: Path, table: str = "chaos_setting1_crapnet_lite") -> str:
    """The diagnostics of a table's trained CRAPNet models (``results/diagnostics/<table>/``), each against
    the bound Eq. 13 sets (:func:`crapnet_core.engine.diagnostics.eq13_bounds`)."""
    import pandas as pd

    from ..engine.diagnostics import eq13_bounds

    root = results / "diagnostics" / table
    if not (root / "blocks.csv").is_file():
        return f"Not run yet (`results/diagnostics/{table}/`).\n"
    blocks = pd.read_csv(root / "blocks.csv")
    agg = blocks.groupby(["source", "branch", "block"]).mean(numeric_only=True)
    ent, cyc, res = agg["entropy / log N"], agg["cycle j*=j"], agg["‖W_z y‖/‖x‖"]
    n_pix = int(round(float(np.exp(blocks["log N"].iloc[0]))))
    var = pd.read_csv(root / "variants.csv")
    full = var[var.variant.str.startswith("full")].set_index("fold")
    byp = var[var.variant.str.startswith("attention bypassed")].set_index("fold")
    lit = var[var.variant.str.startswith("Eq. 14-16")].set_index("fold")
    gain = byp["Mean"] - full["Mean"]
    organ_gain = [byp[o].mean() - full[o].mean() for o in ("LK", "RK", "Spleen", "Liver")]
    protos = pd.read_csv(root / "prototypes.csv")
    pt = protos[protos.source == "test pairs"].groupby("organ")["local fg prototypes"].mean()
    none = [o.replace("_", " ") for o, v in pt.items() if v == 0]
    bound = eq13_bounds(n_pix)
    words = {2: "two", 3: "three", 4: "four", 5: "five"}
    n_models = words.get(len(full), str(len(full)))
    return (
        "- The attention is almost **uniform**: the column softmax has entropy "
        f"{range_md(ent, 3, 1.0)} × log N (N = {n_pix} feature pixels; mean over folds of each block, branch and source), "
        f"and the cycle is consistent (j* = j) for {range_md(cyc, 1)} % of pixels.\n"
        f"- Against the bound of Eq. 13 (a softmax over cosines in [−1, 1], no temperature): its resemblance weights "
        f"w could reach {num(bound['max_weight'], 1)} (one pixel at cosine +1, the rest at −1; N = {n_pix}); the largest "
        f"measured is {range_md(agg['max w'], 2, 1.0)} per block (mean over folds), "
        f"{range_md(agg['max w'] / bound['max_weight'], 0)} % of what the formula allows.\n"
        f"- Each block changes its input by **{range_md(res, 1)} %** (‖W_z y‖ / ‖x‖ = {range_md(res, 3, 1.0)}).\n"
        f"- With the attention bypassed (z = x) the same trained CRAPNet models score {num(byp['Mean'].mean(), 2)} ± "
        f"{num(byp['Mean'].std(ddof=1), 2)} instead of {num(full['Mean'].mean(), 2)} ± {num(full['Mean'].std(ddof=1), 2)} "
        f"(the organs change by {pts(min(organ_gain) / 100, 1)} to {pts(max(organ_gain) / 100, 1)} points, the fold "
        f"means by {pts(gain.min() / 100, 1)} to {pts(gain.max() / 100, 1)}, higher in {int((gain > 0).sum())} of "
        f"{len(gain)} folds; `results/diagnostics/{table}/variants.csv`; a diagnostic of the {n_models} "
        "models, outside the declared families, so no call); reading Eq. 14–16 literally (global prototype and "
        f"scores from x) gives {num(lit['Mean'].mean(), 2)}.\n"
        "- **Local foreground prototypes are rare** even at the paper's 8 × 8 grid: a test support slice gives on "
        "average "
        + ", ".join(f"{num(v, 1)} valid local {o.replace('_', ' ')}" for o, v in pt.items() if v > 0)
        + (f" prototypes and none for the {' or the '.join(none)}" if none else " prototypes")
        + " (the 0.95 rule), so for an organ without one CRAPNet's foreground is the global prototype alone.\n"
    )


def explain(results: Path, an: Mapping) -> str:
    att = find_comparison(an, "decomposition", "chaos_setting1_alpnet-attention_lite", "chaos_setting1_alpnet_lite")
    car = find_comparison(an, "decomposition", "chaos_setting1_alpnet-carafe_lite", "chaos_setting1_alpnet_lite")
    main = [
        e
        for e in an["families"]["main"]["comparisons"]
        if e.get("result") and "crapnet" in e["a"] and "_alpnet_" in e["b"]
    ]
    s2 = find_comparison(an, "setting2", "chaos_setting2_crapnet_lite", "chaos_setting2_alpnet_lite")
    parts = [
        "At about 650 self-supervised steps from random initialisation the attention blocks have not learned a "
        "selective support–query correspondence (near-uniform attention, few consistent cycles)."
    ]
    if att:
        parts.append(
            f"Added to SSL-ALPNet they lower its Dice ({diff_md(att)}); bypassing them in the trained CRAPNet "
            "models raises it (above)."
        )
    if car:
        parts.append(
            f"The learned CARAFE++ prototypes move SSL-ALPNet by {diff_md(car)}"
            + ("" if car["call"] == "resolved" else ": a gain this study cannot separate from fold and seed noise")
            + "."
        )
    if main:
        calls = {e["call"] for e in main}
        parts.append(
            "CRAPNet ends level with SSL-ALPNet in setting 1 on both datasets ("
            + "; ".join(f"{comparison_where(e)}: {diff_md(e)}" for e in main)
            + ")"
            if calls == {"not resolved"}
            else "CRAPNet − SSL-ALPNet in setting 1: " + "; ".join(f"{comparison_where(e)}: {diff_md(e)}" for e in main)
        )
        parts[-1] += "."
    if s2:
        parts.append(f"In CHAOS setting 2 (one seed) CRAPNet − SSL-ALPNet is {diff_md(s2)}.")
    parts.append(
        "The diagnostics and the decomposition are measured on CHAOS setting 1 only. What this does **not** "
        "show: whether the attention helps with COCO-pretrained features and the paper's training, which needs "
        "the `paper` profile on a GPU (`benchmarks/gpu_check.sh`)."
    )
    return " ".join(parts) + "\n"


def budget_file(results: Path, table: str) -> Path:
    """The budget curve of a one-fold budget table: in its run folder (``<table>/seed0/<run>/budget.json``,
    the per-run layout of the study), else at the table's top (the layout before it)."""
    found = sorted((Path(results) / table).glob("seed*/*/budget.json"))
    return found[0] if found else Path(results) / table / "budget.json"


def budget_text(results: Path) -> str:
    curves = {}
    for m in ("crapnet", "alpnet"):
        path = budget_file(results, f"budget_chaos_setting1_f0_{m}")
        if path.is_file():
            curves[m] = {p["step"]: p["dice"] for p in read_json(path)["points"]}
    if len(curves) < 2:
        return "The budget curves are not committed yet.\n"
    steps = sorted(set(curves["crapnet"]) & set(curves["alpnet"]))
    first, last = steps[0], steps[-1]
    mid = max((s for s in steps if s < last), default=first)
    gain = {m: 100 * (c[last]["mean"] - c[first]["mean"]) for m, c in curves.items()}
    by_mid = {m: 100 * (c[mid]["mean"] - c[first]["mean"]) / gain[m] for m, c in curves.items()}
    gap = {s: 100 * (curves["crapnet"][s]["mean"] - curves["alpnet"][s]["mean"]) for s in steps}
    lite = {
        m: (read_summary(results, f"chaos_setting1_{m}_lite", seed=0) or {})
        .get("per_fold", {})
        .get("0", {})
        .get("dice", {})
        .get("mean")
        for m in curves
    }
    organs = ", ".join(
        f"{o.replace('_', ' ')} {num(100 * curves['crapnet'][last][o], 1)} / {num(100 * curves['alpnet'][last][o], 1)}"
        for o in ("left_kidney", "right_kidney", "spleen", "liver")
    )
    ahead = all(g > 0 for g in gap.values())
    return (
        f"For comparison, the `lite` tables' seed-0 fold-0 models (650 steps) scored {num(100 * lite['crapnet'], 2)} "
        f"(CRAPNet) and {num(100 * lite['alpnet'], 2)} (SSL-ALPNet). From {first:,} to {last:,} steps CRAPNet gains "
        f"{num(gain['crapnet'], 1)} points ({num(100 * curves['crapnet'][first]['mean'], 1)} → "
        f"{num(100 * curves['crapnet'][last]['mean'], 1)}) and SSL-ALPNet {num(gain['alpnet'], 1)} "
        f"({num(100 * curves['alpnet'][first]['mean'], 1)} → {num(100 * curves['alpnet'][last]['mean'], 1)}), "
        f"{num(100 * by_mid['crapnet'], 0)} % and {num(100 * by_mid['alpnet'], 0)} % of it by {mid:,} steps. "
        f"CRAPNet − SSL-ALPNet is "
        + ", ".join(f"{pts(g / 100)} at {s:,}" for s, g in gap.items())
        + f" steps{' (CRAPNet ahead at every checkpoint)' if ahead else ''}; by organ at {last:,} steps (CRAPNet / "
        f"SSL-ALPNet): {organs}. One fold and its four test scans cannot resolve these differences (no fold-level "
        "interval exists for one fold), so the curve does not say that either method wins with more training; it "
        "shows that the `lite` budget is far from converged for both, so the equal-budget tables compare "
        "early-training models.\n"
    )


# ---------------------------------------------------------------------- ablations.md, results.md
def ablations_text(results: Path, an: Mapping) -> str:
    from ..published import PUBLISHED

    fam = an["families"]["ablations"]
    c = calls_by_call(fam)
    done = [e for e in fam["comparisons"] if e.get("result")]
    nr = [entry_mean_row(e)["mean_diff"] for e in c["not resolved"]]
    p3 = PUBLISHED["table3"]
    others = [p3[5][-1] - v[-1] for k, v in p3.items() if k != 5]
    drop = PUBLISHED["table4"][2][-1] - PUBLISHED["table4"][1][-1]
    band = next((v for k, v in an["bands"].items() if k == "chaos/lite" and v), None)
    text = [
        f"At this budget (CHAOS setting 1, `lite`, seed 0), of the {len(done)} ablation comparisons "
        f"{count_md(len(c['resolved']), 'resolved')} and {count_md(len(c['weak']), 'weak')}"
        + (
            ": " + "; ".join(f"{comparison_name(e)} {diff_md(e)}" for e in c["resolved"] + c["weak"])
            if c["resolved"] + c["weak"]
            else ""
        )
        + "."
    ]
    if nr:
        text.append(
            f"The differences not resolved run from {pts(min(nr))} to {pts(max(nr))} points"
            + (
                f", inside the CHAOS seed band of ± {num(100 * band['band'], 2)}"
                if band and max(abs(x) for x in nr) <= band["band"]
                else ""
            )
            + "."
        )
    for e in done:
        r = entry_mean_row(e)
        if "blocks15" in e["a"] and e["call"] != "resolved" and r["scan_ci_high"] < 0:
            text.append(
                f"Fifteen blocks ({diff_md(e)}) were *resolved* by the per-scan test (per-scan interval "
                f"{ci(r['scan_ci_low'], r['scan_ci_high'])}); at the fold level, with Holm over the six "
                "comparisons, they are not."
            )
    text.append(
        f"The paper reports its best result with 5 blocks ({num(min(others), 1)}–{num(max(others), 1)} points above "
        f"the other counts) and a drop of {num(drop, 1)} points with one branch; neither effect is resolved here, "
        "where the attention as a whole does not yet help ([equal-budget study](equal_budget.md)), so a flat "
        "Table 3 at `lite` does not say that the paper's 5-block optimum is wrong at the paper's budget."
    )
    return " ".join(text) + "\n"


def methods_text(results: Path, an: Mapping) -> str:
    from ..published import PUBLISHED

    def m(ds, st, k):
        return summary_mean(read_summary(results, f"{ds}_setting{st}_{k}_lite"))

    init = [
        m(ds, st, "alpnet_init") for ds in ("chaos", "sabs") for st in (1, 2) if m(ds, st, "alpnet_init") is not None
    ]
    paper_init = [
        PUBLISHED["table2"][ds]["ALPNet-init"][-1]
        for ds in ("chaos", "sabs")
        if "ALPNet-init" in PUBLISHED["table2"][ds]
    ]
    trained = [
        m(ds, st, k)
        for ds in ("chaos", "sabs")
        for st in (1, 2)
        for k in ("alpnet_sup", "panet", "alpnet", "crapnet", "adnet", "qnet")
        if m(ds, st, k) is not None
    ]
    fam = an["families"]["methods"]
    sup = {
        (ds, st): find_comparison(an, "methods", f"{ds}_setting{st}_alpnet_sup_lite", f"{ds}_setting{st}_crapnet_lite")
        for ds in ("chaos", "sabs")
        for st in (1, 2)
    }
    gaps = {
        k: [
            PUBLISHED[f"table{st}"][ds][METHOD_LABELS[k]][-1] - 100 * m(ds, st, k)
            for ds in ("chaos", "sabs")
            for st in (1, 2)
            if m(ds, st, k) is not None
        ]
        for k in ("alpnet", "crapnet", "panet")
    }
    sup_gap = [
        (PUBLISHED[f"table{st}"][ds]["ALPNet"][-1], m(ds, st, "alpnet_sup"))
        for ds in ("chaos", "sabs")
        for st in (1, 2)
    ]
    later = [e for e in fam["comparisons"] if e.get("result") and any(x in e["a"] for x in ("_adnet_", "_qnet_"))]
    c = calls_by_call(fam)
    text = [
        f"One training seed for each method except the three-seed setting-1 rows of CRAPNet, SSL-ALPNet and "
        f"SSL-PANet; every comparison with CRAPNet here is seed 0 against seed 0, in the *other methods* family "
        f"({fam['m']} comparisons, Holm; {len(c['resolved'])} resolved, {len(c['weak'])} weak, "
        f"{len(c['not resolved'])} not resolved, {len(c['missing'])} not run yet)."
    ]
    if init:
        text.append(
            f"The untrained network (ALPNet-init) scores {range_md(init, 0)}"
            + (
                f", near the paper's {min(paper_init):.0f}–{max(paper_init):.0f} for a COCO-initialised one in setting 2"
                if paper_init
                else ""
            )
            + f", so the other trained methods' {range_md(trained, 0)} (SSL-RPNet aside, below) are learned; its "
            "setting-1 and setting-2 numbers are equal because it never sees the training scans."
        )
    text.append(
        "The supervised ALPNet, trained on the manual labels of the organs not tested, against CRAPNet: "
        + "; ".join(f"{DATASET_SHORT[ds]} setting {st} {diff_md(e)}" for (ds, st), e in sup.items() if e)
        + ". Its means are close to the paper's supervised row ("
        + ", ".join(f"{num(100 * ours, 1)} against {paper:.1f}" for paper, ours in sup_gap if ours is not None)
        + "), while SSL-ALPNet and CRAPNet stay "
        + f"{min(gaps['alpnet'] + gaps['crapnet']):.0f}–{max(gaps['alpnet'] + gaps['crapnet']):.0f} points below "
        f"their published rows (SSL-PANet {min(gaps['panet']):.0f}–{max(gaps['panet']):.0f}). At this budget, then, "
        "superpixel self-supervision has not overtaken supervision from other organs' labels; the paper's central "
        "premise needs the training that `lite` does not give."
    )
    if later:
        text.append(
            "ADNet and Q-Net, the later methods with one foreground prototype and a learned or query-predicted "
            "threshold, against CRAPNet: "
            + "; ".join(f"{table_label(e['a'])} {comparison_where(e)} {diff_md(e)}" for e in later)
            + ". Their CHAOS means are also below SSL-PANet's (not tested)."
        )
    text.append("SSL-RPNet has no setting-2 row yet (the paper has none; the run is queued last).")
    return " ".join(text) + "\n"


def rpnet_text(results: Path, an: Mapping) -> str:
    from ..engine.comparisons import compare_tables, load_table, mean_row

    root = results / "rpnet_iterations"

    def rows(path):
        return {r["eval_iters"]: 100 * r["mean_dice"] for r in read_json(root / path)["rows"]}

    r650, r2k = rows("iterations.json"), rows("steps2000/iterations.json")
    b650, b2k = rows("cre_batch_stats/iterations.json"), rows("steps2000/cre_batch_stats/iterations.json")
    ref_iters = read_json(root / "iterations.json")["reference_eval_iters"]
    alp = {
        k: read_json(root / p).get("alpnet_validation", {}).get("mean_dice")
        for k, p in (("650", "iterations.json"), ("2000", "steps2000/iterations.json"))
    }
    crap = {
        ds: find_comparison(an, "methods", f"{ds}_setting1_rpnet_lite", f"{ds}_setting1_crapnet_lite")
        for ds in ("chaos", "sabs")
    }
    init = {ds: summary_mean(read_summary(results, f"{ds}_setting1_alpnet_init_lite")) for ds in ("chaos", "sabs")}
    rp = {ds: read_summary(results, f"{ds}_setting1_rpnet_lite") for ds in ("chaos", "sabs")}
    from ..published import PUBLISHED

    five, vs_ref, vs_crap = {}, {}, {}
    for ds in ("chaos", "sabs"):
        folder = root / "batch_stats_5fold" / f"{ds}_setting1"
        if not (folder / "summary.json").is_file():
            continue
        bs = load_table(folder / "summary.json")
        five[ds] = read_json(folder / "summary.json")
        vs_ref[ds] = mean_row(compare_tables(bs, load_table(results / f"{ds}_setting1_rpnet_lite")))
        vs_crap[ds] = mean_row(compare_tables(load_table(results / f"{ds}_setting1_crapnet_lite"), bs))

    def pm(s):
        from ..engine.stats import fold_spread

        d = fold_spread(s)["mean"]
        return f"{num(100 * d['mean'], 2)} ± {num(100 * d['std'], 2)}"

    def fl(r):
        return f"{pts(r['mean_diff'], 1)} {ci(r['ci_low'], r['ci_high'], 1)} (fold-level p {pval(r['p'])})"

    alp_txt = (
        ""
        if None in alp.values()
        else (
            f", where SSL-ALPNet trained with the same steps scores "
            f"{num(100 * alp['650'], 1)} and {num(100 * alp['2000'], 1)}"
        )
    )
    text = (
        f"**SSL-RPNet falls below the untrained network** (setting 1: CHAOS {pm(rp['chaos'])}, Synapse CT "
        f"{pm(rp['sabs'])}, against ALPNet-init's {num(100 * init['chaos'], 2)} / {num(100 * init['sabs'], 2)} and the "
        f"paper's {PUBLISHED['table1']['chaos']['SSL-RPNet'][-1]:.2f} / {PUBLISHED['table1']['sabs']['SSL-RPNet'][-1]:.2f}; "
        f"against CRAPNet {diff_md(crap['chaos'], 1)} and {diff_md(crap['sabs'], 1)}). A diagnostic on the *validation* "
        "scan of CHAOS fold 0 (held out of training; `crapnet study analysis rpnet_iterations`, tables in "
        "`results/rpnet_iterations/`) separates two causes. First, the encoder trained through RPNet's context "
        "relation encoder (CRE) is weaker for prototype matching than SSL-ALPNet's at the same steps: the *initial* "
        f"mask, the prototypical prediction that the refinement starts from, scores {num(r650[0], 1)} mean Dice at the "
        f"`lite` 650 steps and {num(r2k[0], 1)} at 2,000{alp_txt}. Second, the refinement does not improve that mask at "
        f"test: at 650 steps 1–{max(r650)} iterations give {num(min(v for k, v in r650.items() if k), 1)}–"
        f"{num(max(v for k, v in r650.items() if k), 1)}, and at 2,000 steps {num(r2k[0], 1)} becomes "
        + ", ".join(f"{num(r2k[k], 1)} after {k}" for k in sorted(r2k) if k in (1, 4, max(r2k)))
        + f" iterations (the reference uses {ref_iters}). The culprit is the CRE's BatchNorm at test: when the same "
        "trained models normalise with the statistics of the batch at hand instead of the running estimates, the "
        f"refinement improves the mask as RPNet intends (650 steps: {num(b650[0], 1)} → {num(b650[max(b650)], 1)} after "
        f"{max(b650)} iterations; 2,000 steps: {num(b2k[0], 1)} → "
        + ", ".join(f"{num(b2k[k], 1)} after {k}" for k in sorted(b2k) if k in (1, max(b2k)))
        + "). Why the running "
        "estimates mislead we read, without a separate test, as their averaging over differently masked inputs in "
        "training. The reference evaluates in torch's eval mode as we do, so the table row follows the reference's "
        "protocol."
    )
    if five:
        text += (
            " With that one change, chosen on the validation scan, the *same* fold models score "
            + " and ".join(f"{pm(s)} on {DATASET_SHORT[ds]}" for ds, s in five.items())
            + " (`crapnet study analysis rpnet_batch_stats_{chaos,sabs}`; against the reference protocol "
            + ", ".join(f"{fl(r)}" for r in vs_ref.values())
            + "; CRAPNet is ahead by "
            + ", ".join(f"{fl(r)}" for r in vs_crap.values())
            + "; fold-level analyses outside the declared families, so without a call). This second number is an "
            "analysis of the models, reported beside the table row, not a replacement for it."
        )
    return text + "\n"


# ---------------------------------------------------------------------- limitations, method, README
def limitations_study(results: Path, an: Mapping) -> str:
    main = [
        e
        for e in an["families"]["main"]["comparisons"]
        if e.get("result") and "_crapnet_" in e["a"] and "_alpnet_" in e["b"]
    ]
    s2 = [
        e
        for e in an["families"]["setting2"]["comparisons"]
        if e.get("result") and "_crapnet_" in e["a"] and "_alpnet_" in e["b"]
    ]
    calls1 = sorted({e["call"] for e in main})
    text = (
        f"**What the equal-budget study can and cannot say.** At the `lite` budget CRAPNet − SSL-ALPNet in setting 1 "
        f"is {' / '.join(calls1)} on "
        + " and ".join(f"{DATASET_SHORT[e['result']['dataset']]} ({diff_md(e)})" for e in main)
        + "; in setting 2 (one seed) it is "
        + " and ".join(f"{diff_md(e)} on {DATASET_SHORT[e['result']['dataset']]}" for e in s2)
        + ". "
        "The diagnostics show why the attention does not help there: it stays nearly uniform and its small residual "
        "lowers the Dice at test ([the equal-budget study](equal_budget.md)). This says nothing about the paper's "
        "regime (COCO-pretrained ResNet-101, 100,000 steps), which needs a GPU. The setting-1 comparison of CRAPNet, "
        "SSL-ALPNet and SSL-PANet uses three training seeds, every other table one; the comparisons treat the fold "
        "as the unit (the scans of a fold share a model), correct for multiplicity within declared families and "
        "hold one-seed differences to the seed band (the rule: `results/README.md`)."
    )
    return text + "\n"


def choices(results: Path) -> str:
    """Item 5 of issue 19: what was chosen where (method page and study page)."""
    from ..engine.experiment import make_config
    from ..models.encoders import OUTPUT_STRIDE

    lite, paper = make_config("lite", "phantom", 1, 0, "crapnet"), make_config("paper", "phantom", 1, 0, "crapnet")
    ext = {n: c.model.carafe_kernel / c.data.input_size for n, c in (("lite", lite), ("paper", paper))}
    fold_of = _fold_of_scans(results)
    t = read_json(results / "select_lite" / "trials.json")
    scans = sorted({s for r in t["rows"] for s in r["validation_scans"]}, key=int)
    conv = results / "select_converged" / "rule.md"
    return (
        f"- **Validation scans.** `lite` was chosen on CHAOS scan{'s' * (len(scans) > 1)} {', '.join(scans)}, held out "
        f"of the training of fold 0; {'it is a test scan' if len(scans) == 1 else 'they are test scans'} of fold "
        f"{', '.join(sorted({str(fold_of.get(s, '?')) for s in scans}))}, so {'it enters' if len(scans) == 1 else 'they enter'} "
        "the 5-fold means (tested there by another model). The choice rested on that one scan"
        + (
            " (the converged budget's rule, `results/select_converged/rule.md`, holds out several validation scans and "
            "names the fold whose test set holds them)"
            if conv.is_file()
            else ""
        )
        + ".\n"
        f"- **CARAFE++ window at reduced size.** `lite` keeps the paper's {lite.model.carafe_kernel} × "
        f"{lite.model.carafe_kernel} reassembly kernel at σ = {lite.model.carafe_factor} ({lite.data.input_size} px "
        f"input; the paper: σ = {paper.model.carafe_factor} at {paper.data.input_size} px): the window spans the same "
        f"number of feature pixels on a {lite.data.input_size // OUTPUT_STRIDE} × {lite.data.input_size // OUTPUT_STRIDE} "
        f"feature map instead of {paper.data.input_size // OUTPUT_STRIDE} × {paper.data.input_size // OUTPUT_STRIDE}, "
        f"so it covers {num(ext['lite'] / ext['paper'], 1)} "
        "times the paper's physical extent of the image.\n"
        "- **CARAFE++ cells as local prototypes.** Each CARAFE++ output cell is used as a *local* prototype under "
        "SSL-ALPNet's 0.95 rule (a cell is a foreground prototype when at least 0.95 of it is foreground); the paper "
        "calls the CARAFE++ output the global prototype.\n"
        "- **The normaliser of Eq. 1.** C(x) runs over the support pixels only; the paper writes the concatenation of "
        "support and query features.\n"
    )


def paper_gap(results: Path, an: Mapping) -> str:
    from ..published import PUBLISHED

    parts = []
    for ds in ("chaos", "sabs"):
        cells = []
        for k in ("crapnet", "alpnet", "panet"):
            s = read_summary(results, f"{ds}_setting1_{k}_lite")
            if s:
                cells.append(
                    f"{METHOD_LABELS[k]} {num(100 * summary_mean(s), 2)} vs {PUBLISHED['table1'][ds][METHOD_LABELS[k]][-1]:.2f}"
                )
        parts.append(f"{DATASET_SHORT[ds]} setting 1: " + ", ".join(cells))
    main = [e for e in an["families"]["main"]["comparisons"] if e.get("result")]
    return (
        "Our `lite` numbers are far below the paper's for every method of Tables 1–2 (mean Dice, three seeds; "
        + "; ".join(parts)
        + "). This is expected and is not a reproduction of the paper's numbers: random "
        "initialisation instead of COCO-pretrained DeepLabV3 weights, 650 steps instead of 100,000, and a ResNet-18 "
        "stem + layer1-2 at 128 px instead of ResNet-101 at 256 px.\n\nUnder the declared rule (above): "
        + "; ".join(f"{comparison_name(e)} on {comparison_where(e)} {diff_md(e)}" for e in main)
        + ". The decomposition, the ablations and the other methods are in the tables above and in "
        "`book/equal_budget.md`, `book/ablations.md` and `book/results.md`.\n"
    )


def rerun_text(results: Path) -> str:
    """The rerun check (issue 25) in sentences: committed vs rerun fold Dice and the kernel variants'
    range, from ``results/rerun_check/rerun_check.json`` and ``kernels.json``."""

    folder = results / "rerun_check"
    path = folder / "rerun_check.json"
    if not path.is_file():
        return "No rerun check has been committed yet (`crapnet rerun-check`).\n"
    check = read_json(path)
    parts = []
    for f in check.get("folds", []):
        comp = f.get("comparison") or {}
        mean = (comp.get("dice") or {}).get("mean") or {}
        if mean.get("committed") is None or mean.get("rerun") is None:
            continue
        machine = (f.get("committed_run_info") or {}).get("machine", "an unrecorded machine")
        parts.append(
            f"`{f['sample']}` (table:seed:fold) was {num(100 * mean['committed'], 2)} when committed "
            f"({machine}) and reruns here to {num(100 * mean['rerun'], 2)} "
            f"({num(100 * (mean['rerun'] - mean['committed']), 2)} points)"
        )
    text = [
        f"`rerun_check/` holds `crapnet rerun-check`'s table (committed against rerun Dice of sampled folds, "
        f"configs and hashes checked; run on {check.get('machine', '?')} at commit `{check.get('commit', '?')}`), "
        "`kernels.md` (the same fold under lowered CPU kernel families, `benchmarks/rerun_kernels.py`) and "
        "`diagnosis.md`."
    ]
    if parts:
        text.append("Fold mean Dice: " + "; ".join(parts) + ".")
    kpath = folder / "kernels.json"
    if kpath.is_file():
        k = read_json(kpath)
        vals = [
            100 * v["dice"]["mean"]
            for v in k.get("variants") or []
            if isinstance(v, Mapping) and (v.get("dice") or {}).get("mean") is not None
        ]
        if vals:
            text.append(
                f"On this machine, changing only the instruction set of torch's, oneDNN's and MKL's kernels "
                f"moves the same fold between {num(min(vals), 2)} and {num(max(vals), 2)} "
                f"({len(vals)} variants): the committed `lite` numbers depend on the CPU by a few Dice points "
                "per fold, not on the code or the package versions."
            )
    text.append("Runs record their environment (`RUN/environment.json`, `run_info.json` → `environment`).")
    return " ".join(text) + "\n"


def prose_blocks(results: Path, an: Mapping, repo: Path) -> dict[str, str]:
    """Every generated block of sentences (name -> Markdown)."""
    return {
        "selection": selection(results),
        "selection_readme": selection(results, readme=True),
        "main_text": main_text(results, an),
        "setting2_text": setting2_text(results, an),
        "decomposition_text": decomposition_text(results, an),
        "diagnostics": diagnostics(results),
        "diagnostics_converged": diagnostics(results, "chaos_setting1_crapnet_converged"),
        "explain": explain(results, an),
        "budget_text": budget_text(results),
        "ablations_text": ablations_text(results, an),
        "methods_text": methods_text(results, an),
        "rpnet_text": rpnet_text(results, an),
        "limitations_study": limitations_study(results, an),
        "choices": choices(results),
        "paper_gap": paper_gap(results, an),
        "rerun": rerun_text(results),
    }


__all__ = [
    "prose_blocks",
    "selection",
    "main_text",
    "setting2_text",
    "decomposition_text",
    "diagnostics",
    "explain",
    "budget_text",
    "ablations_text",
    "methods_text",
    "rpnet_text",
    "limitations_study",
    "choices",
    "paper_gap",
    "rerun_text",
]
