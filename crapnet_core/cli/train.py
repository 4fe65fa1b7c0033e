"""``crapnet train / evaluate / cross-validate / segment / support-results``.

    crapnet train --dataset chaos --setting 1 --fold 0 --method crapnet --profile lite --out RUN
    crapnet train ... --set model.n_blocks=7 --steps 200 --device cpu      (overrides)
    crapnet train ... --resume                                             (continue a killed run)
    crapnet evaluate RUN [--checkpoint CKPT] [--split validation]
    crapnet evaluate RUN --checkpoints all          (budget curve: every step_<n>.pt -> RUN/budget.json)
    crapnet evaluate RUN --checkpoints 1000,2000 --split validation   (-> RUN/budget_validation.json)
    crapnet evaluate RUN --supports all --shots all   (support choice -> RUN/support_sensitivity.json; k-shot -> RUN/kshot.json)
    crapnet support-results CV_DIR --results-dir results     (both, for every fold run, into the results layout)
    crapnet cross-validate --dataset chaos --setting 2 --method alpnet --profile lite --out DIR
    crapnet cross-validate ... --seeds 0,1,2       (one cross-validation per training seed + aggregate)
    crapnet segment --run RUN --support-image S.nii.gz --support-label L.nii.gz \\
        --support-organ-label 1 --query-image Q.nii.gz --out pred.nii.gz
    crapnet segment ... --support-image S1 --support-label L1 --support-image S2 --support-label L2 ...  (k-shot)

Every config field can be overridden with ``--set section.field=value`` (repeatable);
``--steps``, ``--device``, ``--blocks``, ``--branches``, ``--encoder``, ``--input-size``,
``--seed``, ``--lr`` and the ``--superpixel-*`` options are shortcuts for the common ones.

Test organs: ``--group`` names organs of the dataset's label map (``--group heart,lung``),
or the paper's groups ``kidneys`` / ``liver_spleen``; ``cross-validate`` takes it too
(repeatable: one model per group and fold).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..engine.experiment import RUN_PROFILES
from ..models.config import METHODS


def _add_experiment_args(p: argparse.ArgumentParser, with_fold: bool = True) -> None:
    p.add_argument(
        "--dataset",
        default="phantom",
        help="chaos, sabs, phantom (synthetic, default) or a folder with image_*/label_*.nii.gz",
    )
    p.add_argument(
        "--labels",
        default=None,
        help='label map (JSON/YAML) for a folder dataset (default: its labels.json), e.g. {"modality": '
        '"MR", "labels": {"background": 0, "heart": 1, "left kidney": 2}}: positive ids, 0 = background; '
        "names may hold spaces or / (written as _ in file names)",
    )
    p.add_argument("--data-root", default=None, help="folder holding CHAOST2/ and SABS/ (default $CRAPNET_DATA_ROOT)")
    p.add_argument("--setting", type=int, choices=(1, 2), default=1, help="1 or 2 (paper Sec. 4.2)")
    group_help = (
        "test organs, names of the label map joined by commas (e.g. --group heart,lung) or a paper "
        "group: kidneys, liver_spleen (0/1). Default: the 4 abdominal organs (setting 1), kidneys (setting 2). "
        "Setting 2 drops every training slice that shows one of them"
    )
    if with_fold:
        p.add_argument("--fold", type=int, default=0, help="cross-validation fold 0..4")
        p.add_argument("--group", default=None, help=group_help + " (alpnet_sup tests one group in both settings)")
    else:
        p.add_argument(
            "--group",
            dest="groups",
            action="append",
            default=None,
            metavar="GROUP",
            help=group_help + " (repeatable: one model per group and fold; default in setting 2: "
            "kidneys and liver_spleen)",
        )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="crapnet",
        help="crapnet, alpnet (SSL-ALPNet), panet (SSL-PANet) or a registered method: "
        "alpnet_init, alpnet_sup (supervised ALPNet), rpnet (SSL-RPNet), adnet, qnet "
        "(book/method.md)",
    )
    p.add_argument("--profile", choices=RUN_PROFILES, default="smoke")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set model.n_blocks=7 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="shortcut for --set train.steps=N")
    p.add_argument("--device", help="shortcut for --set train.device=... (auto, cpu, cuda)")
    p.add_argument("--blocks", type=int, help="shortcut for --set model.n_blocks=N")
    p.add_argument("--branches", type=int, help="shortcut for --set model.branches=N")
    p.add_argument("--encoder", help="shortcut for --set model.encoder=NAME")
    p.add_argument("--input-size", type=int, help="shortcut for --set data.input_size=S")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    p.add_argument("--lr", type=float, help="shortcut for --set train.lr=X")
    sp = p.add_argument_group("superpixel pseudo-labels (the cache `crapnet superpixels` fills with the same values)")
    sp.add_argument(
        "--superpixel-min-size",
        type=int,
        metavar="N",
        help="Felzenszwalb min_size in pixels (default 400); --set superpixels.min_size=N",
    )
    sp.add_argument(
        "--superpixel-sigma", type=float, metavar="X", help="Felzenszwalb sigma (default 1); --set superpixels.sigma=X"
    )
    sp.add_argument(
        "--superpixel-scale", type=float, metavar="X", help="Felzenszwalb scale (default 1); --set superpixels.scale=X"
    )
    sp.add_argument(
        "--min-superpixel-area",
        type=int,
        metavar="N",
        help="smallest superpixel (pixels of the 256 x 256 slice) used as an episode's foreground "
        "(default 200); --set superpixels.min_area=N",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _overrides(args) -> list[str]:
    out: list[str] = []
    if args.data_root:
        out.append(f"data.data_root={args.data_root}")
    if args.labels:
        out.append(f"data.labels={args.labels}")
    shortcuts = (
        ("steps", "train.steps"),
        ("device", "train.device"),
        ("blocks", "model.n_blocks"),
        ("branches", "model.branches"),
        ("encoder", "model.encoder"),
        ("input_size", "data.input_size"),
        ("seed", "train.seed"),
        ("lr", "train.lr"),
        ("superpixel_min_size", "superpixels.min_size"),
        ("superpixel_sigma", "superpixels.sigma"),
        ("superpixel_scale", "superpixels.scale"),
        ("min_superpixel_area", "superpixels.min_area"),
    )
    for attr, key in shortcuts:
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out + list(args.overrides)


def _config(args):
    from ..engine.experiment import make_config

    return make_config(
        args.profile, args.dataset, args.setting, args.fold, args.method, _overrides(args), test_group=args.group
    )


def _cmd_train(args) -> int:
    from ..engine.experiment import describe
    from ..engine.training import TrainingDiverged, train

    cfg = _config(args)
    print(f"crapnet train: {describe(cfg)} -> {args.out}", file=sys.stderr)
    try:
        ckpt = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, force=args.force)
    except TrainingDiverged as err:
        print(f"crapnet train: error: {err}", file=sys.stderr)
        return 3
    print(ckpt)
    if args.evaluate:
        from ..engine.evaluation import evaluate

        m = evaluate(args.out, progress=not args.no_progress, split=args.on)
        _print_metrics(m)
    return 0


def _print_metrics(m: dict) -> None:
    from ..engine.runs import ORGAN_COLUMNS

    parts = []
    for organ, row in m["per_organ"].items():
        d = row["dice_mean"]
        parts.append(f"{ORGAN_COLUMNS.get(organ, organ)} {'-' if d is None else f'{100 * d:.2f}'}")
    mean = m["mean"]["dice"]
    print(
        f"Dice: {', '.join(parts)}; mean {'-' if mean is None else f'{100 * mean:.2f}'} "
        f"(support scan {m['support']['scan_id']}, fold {m['fold']}, {m.get('split', 'test')} scans "
        f"{' '.join(map(str, m['test_scans']))})"
    )


def _cmd_evaluate(args) -> int:
    from ..engine.evaluation import evaluate, metrics_filename

    if args.supports is not None or args.shots is not None:
        return _evaluate_supports(args)
    if args.checkpoints is not None:
        if args.checkpoint is not None:
            raise ValueError("--checkpoint and --checkpoints: give one of them")
        from ..engine.budget import budget_filename, budget_markdown, evaluate_checkpoints

        budget = evaluate_checkpoints(
            args.run, args.checkpoints, device=args.device, progress=not args.no_progress, split=args.split
        )
        print(budget_markdown(budget))
        print(Path(args.run) / budget_filename(args.split))
        return 0

    m = evaluate(
        args.run,
        checkpoint=args.checkpoint,
        device=args.device,
        progress=not args.no_progress,
        save_predictions=False if args.no_predictions else None,
        split=args.split,
    )
    _print_metrics(m)
    print(Path(args.run) / metrics_filename(args.split))
    return 0


def _evaluate_supports(args) -> int:
    """``--supports all`` and/or ``--shots K``: RUN/support_sensitivity.json, RUN/kshot.json (metrics.json untouched)."""
    from ..engine.support import KSHOT_FILE, SENSITIVITY_FILE, evaluate_shots, evaluate_supports

    if args.checkpoints is not None:
        raise ValueError("--checkpoints cannot be combined with --supports / --shots")
    if args.split != "test":
        raise ValueError("--supports / --shots evaluate the test scans; --split validation is not available with them")
    if args.supports is not None and args.supports != "all":
        raise ValueError(f"--supports: {args.supports!r}; the only value is 'all' (every admissible support)")
    if args.supports is not None:
        sens = evaluate_supports(
            args.run, checkpoint=args.checkpoint, device=args.device, progress=not args.no_progress
        )
        fold = sens["per_fold"]["mean"]
        print(
            f"support choice, fold {sens['fold']} ({len(sens['supports'])} admissible supports): mean Dice "
            f"{100 * fold['standard']:.2f} with the fold's support {sens['standard_support']}; per query the Dice "
            f"moves by {100 * fold['range']:.2f} points (range, mean over queries; SD {100 * fold['sd']:.2f})"
        )
        print(Path(args.run) / SENSITIVITY_FILE)
    if args.shots is not None:
        res = evaluate_shots(
            args.run, args.shots, checkpoint=args.checkpoint, device=args.device, progress=not args.no_progress
        )
        cells = []
        for point in res["points"]:
            d = point["mean"]["dice"]
            cells.append(f"k={point['k']} {'-' if d is None else f'{100 * d:.2f}'}")
        print("k-shot mean Dice: " + ", ".join(cells))
        print(Path(args.run) / KSHOT_FILE)
    return 0


def _cmd_support_results(args) -> int:
    from ..report.support import write_support_results

    runs = []
    for r in args.runs:
        p = Path(r)
        # a cross-validation folder: its fold runs (the sub-folders holding config.json)
        runs.extend(sorted(c.parent for c in p.glob("*/config.json")) if not (p / "config.json").is_file() else [p])
    if not runs:
        raise ValueError(f"support-results: no run folder (config.json) in {' '.join(args.runs)}")
    for path in write_support_results(
        runs, args.results_dir, shots=args.shots, device=args.device, progress=not args.no_progress, table=args.table
    ):
        print(path)
    return 0


def _cmd_cross_validate(args) -> int:
    from ..engine.runs import cross_validate
    from ..engine.training import TrainingDiverged

    folds = None
    if args.folds:
        try:
            folds = [int(f) for f in args.folds.split(",") if f.strip()]
        except ValueError:
            raise ValueError(f"--folds: {args.folds!r} is not a comma-separated list of fold numbers") from None
    args.fold, args.group = 0, None
    seeds = None
    if args.seeds:
        if args.seed is not None:
            raise ValueError("--seed and --seeds: give one of them")
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
    try:
        if seeds:
            from ..engine.runs import cross_validate_seeds

            cross_validate_seeds(
                args.dataset,
                args.setting,
                args.method,
                args.profile,
                args.out,
                seeds,
                overrides=_overrides(args),
                folds=folds,
                progress=not args.no_progress,
                groups=args.groups,
            )
        else:
            cross_validate(
                args.dataset,
                args.setting,
                args.method,
                args.profile,
                args.out,
                overrides=_overrides(args),
                folds=folds,
                progress=not args.no_progress,
                groups=args.groups,
            )
    except TrainingDiverged as err:
        print(f"crapnet cross-validate: error: {err}", file=sys.stderr)
        return 3
    print((Path(args.out) / "summary.md").read_text())
    return 0


def _cmd_segment(args) -> int:
    from ..engine.segment import segment_files

    out = segment_files(
        run=args.run,
        checkpoint=args.checkpoint,
        support_image=args.support_image,
        support_label=args.support_label,
        organ_label=args.support_organ_label,
        query_image=args.query_image,
        out=args.out,
        device=args.device,
        query_range=args.query_range,
        force=args.force,
        replace_nonfinite=args.replace_nonfinite,
    )
    print(json.dumps(out, indent=2))
    return 0


def register(subparsers) -> None:
    """Add ``train``, ``evaluate``, ``support-results``, ``cross-validate`` and ``segment``."""
    p = subparsers.add_parser(
        "train",
        help="self-supervised training of one fold into a run folder",
        description="Train one fold (writes RUN/config.json, checkpoints, metrics.csv).",
    )
    _add_experiment_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.add_argument("--evaluate", action="store_true", help="evaluate after training")
    p.add_argument(
        "--on",
        choices=("test", "validation"),
        default="test",
        help="with --evaluate: the fold's test scans (metrics.json, default) or the validation scan "
        "held out by --set data.validation=true (metrics_validation.json; for choosing settings)",
    )
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser(
        "evaluate",
        help="1-shot evaluation of a trained run (metrics.json, predictions)",
        description="Evaluate a run with the SSL-ALPNet 1-shot protocol.",
    )
    p.add_argument("run", help="run folder (with config.json and checkpoints/)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default RUN/checkpoints/last.pt)")
    p.add_argument(
        "--checkpoints",
        default=None,
        metavar="all|STEP,STEP",
        help="budget curve: evaluate these step_<n>.pt checkpoints (all, or e.g. 1000,3000,10000) "
        "into RUN/budget.json; metrics.json is left alone",
    )
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the run's train.device)")
    p.add_argument("--no-predictions", action="store_true", help="do not write RUN/predictions/*.nii.gz")
    p.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="test scans (metrics.json, default) or the validation scan of a run trained with "
        "--set data.validation=true (metrics_validation.json)",
    )
    p.add_argument(
        "--supports",
        default=None,
        metavar="all",
        help="support-choice sensitivity: every admissible support (the fold's support scan and its "
        "other test scans, never the query) as the 1-shot support of every test scan -> "
        "RUN/support_sensitivity.json; metrics.json is left alone",
    )
    p.add_argument(
        "--shots",
        default=None,
        metavar="K|K,K|all",
        help="k-shot evaluation with k support scans per test scan (the fold's support scan first, then "
        "its other test scans in order, never the query): e.g. 2, 1,2,4 or all (1 up to what the fold "
        "offers) -> RUN/kshot.json (k = 1 is the standard protocol); metrics.json is left alone",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser(
        "support-results",
        help="support-choice sensitivity and k-shot results of trained fold runs into the results folder",
        description="For each trained run (or each fold run of a cross-validation folder): "
        "crapnet evaluate RUN --supports all --shots SHOTS where not done yet, then copy "
        "support_sensitivity.json and kshot.json (with provenance), config.json and "
        "metrics.json into RESULTS/<dataset>_setting<k>_<variant>_<profile>/seed<s>/<run_name>/.",
    )
    p.add_argument("runs", nargs="+", help="run folders, or cross-validation folders holding them")
    p.add_argument("--results-dir", required=True, help="the results folder (e.g. results)")
    p.add_argument("--shots", default="all", help="k of the k-shot evaluation: all (default), K or K,K")
    p.add_argument("--table", default=None, help="table folder name (default <dataset>_setting<k>_<variant>_<profile>)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_support_results)

    p = subparsers.add_parser(
        "cross-validate",
        help="train + evaluate every fold, write summary.json/.md",
        description="5-fold cross-validation (finished folds are skipped).",
    )
    _add_experiment_args(p, with_fold=False)
    p.add_argument("--out", required=True, help="folder for the fold runs and the summary")
    p.add_argument("--folds", default=None, help="subset of folds, e.g. 0,1 (default: all)")
    p.add_argument(
        "--seeds",
        default=None,
        help="training seeds, e.g. 0,1,2: one cross-validation per seed (OUT/seed<k>/summary.*), "
        "OUT/summary.* = the aggregate (per-scan Dice averaged over seeds)",
    )
    p.set_defaults(func=_cmd_cross_validate)

    p = subparsers.add_parser(
        "segment",
        help="segment an organ in a new scan from one annotated example (or k)",
        description="1-shot (or k-shot: repeated --support-image/--support-label pairs) "
        "segmentation of a new scan with a trained model. "
        "Support and query are reoriented from their affines to one canonical orientation "
        "(rows posterior->anterior, columns right->left, slices inferior->superior) and "
        "resampled in-plane to 256 x 256 (any size; the SABS preset's 257 x 257 crop when "
        "the run was trained on SABS); the prediction is written on the query file's own "
        "grid, axis order and affine. Formats: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, or a "
        "folder holding one DICOM series. Intensities: MR is z-scored per volume (any scale); "
        "a CT scan must match the training data's convention (recorded in the run): raw HU "
        "against a run trained on the 0..255 SABS copy is mapped with SSL-ALPNet's window "
        "[-125, 275] HU, other mismatches are refused. NaN/Inf voxels are refused unless "
        "--replace-nonfinite.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="trained run folder (uses RUN/checkpoints/last.pt)")
    src.add_argument("--checkpoint", help="checkpoint file (its config is stored inside)")
    p.add_argument(
        "--support-image",
        required=True,
        action="append",
        help="annotated example scan (NIfTI, NRRD, MetaImage or DICOM folder); repeat it with "
        "--support-label for k annotated examples (k-shot: prototypes pooled over the shots)",
    )
    p.add_argument(
        "--support-label",
        required=True,
        action="append",
        help="its label volume: integer ids on the world grid of its --support-image (another axis "
        "order or flips are reoriented, without resampling); one per --support-image, same order",
    )
    p.add_argument("--support-organ-label", type=int, default=1, help="label id of the organ in --support-label")
    p.add_argument("--query-image", required=True, help="scan to segment (NIfTI, NRRD, MetaImage or DICOM folder)")
    p.add_argument(
        "--query-range",
        default=None,
        help="z0:z1 axial slice range holding the organ in the query, both ends included (10:20 is "
        "11 slices), counted inferior->superior from 0 (default: every slice)",
    )
    p.add_argument("--out", required=True, help="output NIfTI (same shape, axis order and affine as --query-image)")
    p.add_argument("--device", default=None)
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument(
        "--replace-nonfinite",
        action="store_true",
        help="set NaN/infinite image voxels to the scan's lowest value (default: refuse the scan)",
    )
    p.set_defaults(func=_cmd_segment)
