"""Data sub-commands of ``crapnet`` (see crapnet_core/cli/__init__.py).

crapnet data summary   --data-dir DIR [--preset chaos|sabs | --labels FILE] | --dataset chaos|sabs|phantom
crapnet data summary   --scan FILE_OR_DICOM_FOLDER   (one scan: .nii/.nii.gz/.nrrd/.mha/DICOM series)
crapnet data phantom   --out DIR [--scans N] [--seed S]
crapnet data prepare   --source synapse|chaos --raw DIR --out DIR [--size 256] [--scans ID ...]
crapnet superpixels    --data-dir DIR | --dataset NAME  [--out OUT] [--jobs N] [--scans ID ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _add_dataset_args(p: argparse.ArgumentParser, scan: bool = False) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    if scan:
        src.add_argument(
            "--scan",
            metavar="FILE",
            help="one scan: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a folder "
            "holding one DICOM series (orientation, grid, intensities)",
        )
    src.add_argument(
        "--data-dir", metavar="DIR", help="dataset folder of image_<id>.nii.gz / label_<id>.nii.gz pairs (.nii too)"
    )
    src.add_argument("--dataset", metavar="NAME", help="chaos, sabs, phantom, or a folder")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--preset", choices=("chaos", "sabs"), help="use a preset's label map and modality for --data-dir")
    lab.add_argument(
        "--labels",
        metavar="FILE",
        help='label-map file (JSON/YAML), e.g. {"modality": "MR", "labels": {"background": 0, '
        '"liver": 1}}: positive ids, 0 = background (default: labels.json in the folder)',
    )
    p.add_argument("--data-root", metavar="DIR", help="folder holding CHAOST2/ and SABS/ (default $CRAPNET_DATA_ROOT)")


def _spec_from_args(args):
    from ..data.spec import resolve_dataset

    target = args.data_dir if args.data_dir is not None else args.dataset
    labels = args.preset or args.labels
    if args.data_dir is not None and labels is None:
        # a preset folder given by path: infer the preset from the folder name
        name = Path(args.data_dir).name.upper()
        if name in ("CHAOST2", "CHAOS") and not any(
            (Path(args.data_dir) / f).is_file() for f in ("labels.json", "labels.yaml", "labels.yml")
        ):
            labels = "chaos"
        elif name == "SABS" and not any(
            (Path(args.data_dir) / f).is_file() for f in ("labels.json", "labels.yaml", "labels.yml")
        ):
            labels = "sabs"
    return resolve_dataset(target, labels=labels, data_root=args.data_root)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Plain-text table (right-aligned numbers) of a list of dicts."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def scan_summary(path: str, preset: str | None = None) -> list[str]:
    """Lines describing one scan file (any format of :data:`~crapnet_core.data.scans.SCAN_FORMATS`).

    ``preset``: apply that preset's in-plane rule (the SABS 257 x 257 crop).
    """
    import numpy as np

    from ..data.body import body_report, body_threshold_for
    from ..data.errors import DatasetError
    from ..data.geometry import CANONICAL_AXCODES, GeometryError, axcodes, make_geometry
    from ..data.scans import read_scan

    arr, affine, zooms = read_scan(path)
    try:
        geom = make_geometry(arr.shape, affine, zooms, preset=preset, source=path)
    except GeometryError as err:
        raise DatasetError(str(err)) from None
    values = np.asarray(arr)
    finite = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    n_bad = int((~finite).sum())
    vals = values[finite].astype(np.float64)
    p = np.percentile(vals, [0.5, 50, 99.5]) if vals.size else (np.nan,) * 3
    lines = [
        f"scan {path}",
        f"  array {'x'.join(map(str, arr.shape))} ({arr.dtype}), voxel {'x'.join(f'{z:.3g}' for z in geom.file_zooms)} mm",
        f"  orientation {''.join(axcodes(affine))} -> model {''.join(CANONICAL_AXCODES)} "
        f"(rows posterior->anterior, columns right->left, slices inferior->superior)",
        f"  in-plane {geom.canon_shape[0]}x{geom.canon_shape[1]} -> model grid {geom.model_shape[0]}x{geom.model_shape[1]} "
        f"({geom.inplane}), {geom.model_shape[2]} slices, model voxel {'x'.join(f'{z:.3g}' for z in geom.model_spacing)} mm",
        f"  intensities min {vals.min() if vals.size else float('nan'):.4g}, p0.5 {p[0]:.4g}, median {p[1]:.4g}, "
        f"p99.5 {p[2]:.4g}, max {vals.max() if vals.size else float('nan'):.4g}",
        f"  non-finite voxels (NaN/Inf): {n_bad}",
    ]
    if vals.size and not n_bad:
        image = geom.image_to_model(arr)
        rep = body_report(image, None, body_threshold_for(None, image))
        lines.append(
            f"  body mask (Otsu threshold {rep['threshold']:.4g}) keeps {100 * rep['image_share']:.1f}% of the image"
        )
    return lines


def cmd_summary(args) -> int:
    from ..data.scans import scan_ids
    from ..data.summary import organs_in_no_scan, summarize
    from ..facts import ORGANS

    if args.scan is not None:
        print("\n".join(scan_summary(args.scan, args.preset)))
        return 0
    spec = _spec_from_args(args)
    ids = args.scans or scan_ids(spec)
    rows = summarize(spec, ids)
    organs = [o for o in ORGANS if o in spec.labels] + [o for o in spec.labels if o not in ORGANS]
    if not args.all_organs:
        organs = [o for o in organs if o in ORGANS] or organs
    columns = ["scan", "shape", "slices", "spacing_mm", "min", "max", "body_%", "organs_in_body_%", *organs]
    kind = "SYNTHETIC phantom (stand-in, not real data)" if spec.is_phantom else spec.modality
    print(f"dataset {spec.name} ({kind}) at {spec.root}: {len(rows)} scans, {sum(r['slices'] for r in rows)} slices")
    print("labels: " + ", ".join(f"{o}={i}" for o, i in sorted(spec.labels.items(), key=lambda kv: kv[1])))
    print(
        "voxels per organ are counted on the 256 x 256 grid crapnet uses (the file shape is shown); "
        "body_%: share of the grid in the superpixel body mask, organs_in_body_%: share of the labelled voxels in it"
    )
    print(format_table(rows, columns))
    absent = organs_in_no_scan(spec, ids)
    if absent:
        print(
            "not in any scan: "
            + ", ".join(f"{o} (label {spec.labels[o]})" for o in absent)
            + f" -- named by the label map but found in none of the {len(rows)} label files"
        )
    return 0


def cmd_phantom(args) -> int:
    from ..data.phantom import generate_phantom

    t0 = time.perf_counter()
    out = generate_phantom(args.out, n_scans=args.scans, seed=args.seed)
    print(
        f"wrote a SYNTHETIC phantom of {args.scans} scans (seed {args.seed}) to {out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def cmd_prepare(args) -> int:
    from ..data.prepare import prepare_dataset

    summary = prepare_dataset(
        args.source,
        args.raw,
        args.out,
        size=args.size,
        scan_ids=args.scans,
        force=args.force,
        progress=not args.no_progress,
    )
    rows = summary["scans"]
    organs = [o for o in summary["labels"] if any(r[o] for r in rows)]
    print(
        f"prepared {len(rows)} {summary['modality']} scans from {summary['raw']} into {summary['out']} "
        f"in {summary['seconds']:.1f} s: {summary['preprocessing']}"
    )
    print("labels: " + ", ".join(f"{o}={i}" for o, i in summary["labels"].items()) + " (labels.json)")
    print("voxels per organ on the prepared grid:")
    print(format_table(rows, ["scan", "source_size", "source_spacing_mm", "size", "spacing_mm", "min", "max", *organs]))
    print(
        f"use it with: crapnet data summary --data-dir {summary['out']}   or   crapnet train --dataset {summary['out']}"
    )
    return 0


def cmd_superpixels(args) -> int:
    from ..data.scans import scan_ids
    from ..data.superpixels import SuperpixelParams, cache_folder, compute_superpixels
    from ..engine.experiment import SuperpixelConfig

    spec = _spec_from_args(args)
    # the same validation and the same cache key as `crapnet train --set superpixels.*`
    params = SuperpixelConfig(min_size=args.min_size, sigma=args.sigma, scale=args.scale).params()
    out = Path(args.out) if args.out else cache_folder(spec, params)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    ids = args.scans or scan_ids(spec)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    grid = "scan" if args.out else "model"  # --out: files to overlay on the scans; else the training cache
    paths = compute_superpixels(
        spec, out, ids, jobs=args.jobs, progress=not args.no_progress, params=params, timings=timings, grid=grid
    )
    wall = time.perf_counter() - t0
    skipped = len(paths) - len(timings)
    where = (
        "each on its scan's own grid, axis order and affine"
        if grid == "scan"
        else "crapnet's training cache, on the model grid (canonical orientation, 256 x 256; "
        "--out DIR writes them on each scan's own grid)"
    )
    if timings:
        per = sum(timings.values()) / len(timings)
        print(
            f"superpixels: {len(timings)} scans computed in {wall:.1f} s wall "
            f"({per:.2f} s per scan in one process, jobs={args.jobs}), {skipped} already done; output {out} ({where})"
        )
    else:
        print(f"superpixels: all {len(paths)} scans already done in {out} ({where})")
    if not args.out and params != SuperpixelParams():
        print(
            f"training uses this cache with: --superpixel-min-size {params.min_size} --superpixel-sigma "
            f"{params.sigma:g} --superpixel-scale {params.scale:g} (or --set superpixels.min_size=... etc.)"
        )
    return 0


def register(subparsers) -> None:
    """Add ``data`` (summary, phantom, prepare) and ``superpixels`` to ``crapnet``."""
    data = subparsers.add_parser("data", help="inspect datasets, generate the phantom, prepare raw downloads")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = dsub.add_parser(
        "summary",
        help="table of scans, slices, spacing, intensity range, voxels per organ",
        description="Summarise a dataset folder (image_<id>.nii.gz or .nii pairs) or one scan (--scan). "
        "Volumes are reoriented from their affine to the model's canonical orientation and brought "
        "to the 256 x 256 in-plane grid (resampled; the SABS preset's 257 x 257 crop); body_% is "
        "the superpixel body mask (preset thresholds, else Otsu per volume).",
    )
    _add_dataset_args(p, scan=True)
    p.add_argument("--scans", nargs="+", metavar="ID", help="only these scan ids")
    p.add_argument(
        "--all-organs",
        action="store_true",
        help="show every labelled organ (SABS: 13), not just the 4 benchmark organs",
    )
    p.set_defaults(func=cmd_summary)

    p = dsub.add_parser("phantom", help="generate the synthetic phantom dataset into a folder")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--scans", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_phantom)

    p = dsub.add_parser(
        "prepare",
        help="convert a raw Synapse/BTCV or CHAOS download into a dataset folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert a public download into a folder of image_<id>.nii.gz / label_<id>.nii.gz pairs with\n"
            "labels.json, with SSL-ALPNet's preprocessing.\n\n"
            "  synapse: RAW/img/imgNNNN.nii.gz + RAW/label/labelNNNN.nii.gz (also RAW/Training/...,\n"
            "           RAW/RawData/Training/...); HU window [-125, 275] mapped to 0..255; BTCV label ids\n"
            "           (spleen 1, right kidney 2, left kidney 3, ..., liver 6; the sabs preset).\n"
            "  chaos:   RAW/<id>/T2SPIR/DICOM_anon/*.dcm + RAW/<id>/T2SPIR/Ground/*.png (also RAW/MR/...,\n"
            "           RAW/Train_Sets/MR/...); grey 63/126/189/252 -> liver 1, right kidney 2, left kidney 3,\n"
            "           spleen 4 (the chaos preset); intensities clipped at the 99.5th percentile.\n\n"
            "Both: in-plane resampling to --size x --size (image linear, labels nearest; the field of view\n"
            "is kept), slices untouched. The raw folder is only read; OUT/prepare.json records the run."
        ),
    )
    p.add_argument("--source", required=True, choices=("synapse", "chaos"), help="layout of the download")
    p.add_argument("--raw", required=True, metavar="DIR", help="the downloaded (unzipped) folder")
    p.add_argument("--out", required=True, metavar="DIR", help="new dataset folder (not inside --raw)")
    p.add_argument("--size", type=int, default=256, help="in-plane size after resampling (default 256)")
    p.add_argument("--scans", nargs="+", metavar="ID", help="only these scan ids")
    p.add_argument("--force", action="store_true", help="prepare again into a folder that holds a prepared dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser("superpixels", help="superpixel pseudo-labels (Felzenszwalb, SSL-ALPNet setting)")
    _add_dataset_args(p)
    p.add_argument(
        "--out",
        metavar="OUT",
        help="output folder: superpix_<id>.nii.gz on each scan's own grid, axis order and affine (overlays "
        "image_<id> index by index); never the data folder. Default: crapnet's training cache "
        "(on the model grid)",
    )
    p.add_argument("--jobs", type=int, default=1, help="scans computed in parallel (processes)")
    p.add_argument("--scans", nargs="+", metavar="ID", help="only these scan ids")
    p.add_argument(
        "--min-size",
        type=int,
        default=400,
        help="Felzenszwalb min_size, pixels (config field superpixels.min_size; default 400)",
    )
    p.add_argument("--sigma", type=float, default=1.0, help="Felzenszwalb sigma (superpixels.sigma; default 1)")
    p.add_argument("--scale", type=float, default=1.0, help="Felzenszwalb scale (superpixels.scale; default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_superpixels)
