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
from .caveats import (
    budget_text,
    choices,
    limitations_study,
    paper_gap,
    rerun_text,
    rpnet_text,
    selection,
)
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
from .stats_tables import DATASET_SHORT, call_md, ci, pts, table_label


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


def _fold_interval(diff) -> str:
    """``; mean +4.71, 95 % t-interval over folds [+1.61, +7.82]`` for per-fold differences (Dice points), the
    fold as the unit (its models are the replicates); empty for fewer than three folds."""
    from scipy import stats

    d = np.asarray(diff, dtype=float)
    if d.size < 3:
        return ""
    low, high = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    return f"; mean {pts(d.mean() / 100, 2)}, 95 % t-interval over folds {ci(low / 100, high / 100)}"


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
        f"{len(gain)} folds{_fold_interval(gain)}; `results/diagnostics/{table}/variants.csv`; a diagnostic of the "
        f"{n_models} models, outside the declared families, so no call); reading Eq. 14–16 literally (global "
        "prototype and "
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
