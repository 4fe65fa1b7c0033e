"""Data-pipeline throughput: episodes per second (size 256 and 128) and superpixel seconds per scan.

    .venv/bin/python benchmarks/bench_data.py                      # the phantom
    .venv/bin/python benchmarks/bench_data.py --dataset chaos --scans 2
    .venv/bin/python benchmarks/bench_data.py --dataset sabs --scans 1 --episodes 200

Episodes are timed in the calling process (num_workers=0, i.e. the worst case for a
training loop that does not use DataLoader workers), after the dataset is built, with
torch's default number of threads and with one. Superpixels are timed on ``--scans``
training scans of fold 0, computed into a temporary folder (never the cache or the data).
Timings depend on the machine's load: say what else was running when you report them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="phantom", help="chaos, sabs, phantom or a folder")
    ap.add_argument("--labels", default=None)
    ap.add_argument("--episodes", type=int, default=300, help="episodes timed per size")
    ap.add_argument("--scans", type=int, default=3, help="scans timed for superpixels")
    ap.add_argument("--train-scans", type=int, default=3, help="training scans loaded for the episode benchmark")
    args = ap.parse_args(argv)

    import torch

    from crapnet_core.data.episodes import EpisodeDataset
    from crapnet_core.data.protocol import Fold, make_fold
    from crapnet_core.data.scans import scan_ids
    from crapnet_core.data.spec import resolve_dataset
    from crapnet_core.data.superpixels import compute_superpixels

    spec = resolve_dataset(args.dataset, labels=args.labels)
    fold = make_fold(scan_ids(spec), 0)
    print(
        f"dataset {spec.name} ({'SYNTHETIC phantom' if spec.is_phantom else spec.modality}), "
        f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    from crapnet_core.data.phantom import generate_phantom

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_phantom(Path(tmp) / "phantom")
        print(f"phantom generation (10 scans, written as NIfTI): {time.perf_counter() - t0:.2f} s")

    ids = list(fold.train_ids[: args.scans])
    with tempfile.TemporaryDirectory() as tmp:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        compute_superpixels(spec, tmp, ids, jobs=1, progress=False, timings=timings)
        wall = time.perf_counter() - t0
    from crapnet_core.data.volumes import load_volume

    slices = sum(load_volume(spec, i).n_slices for i in ids)
    print(
        f"superpixels: {len(ids)} scans ({slices} slices) in {wall:.2f} s: "
        f"{wall / len(ids):.2f} s per scan, {1000 * wall / slices:.1f} ms per slice "
        f"(per scan: {', '.join(f'{k}={v:.2f}s' for k, v in timings.items())})"
    )

    sub = Fold(fold.index, fold.test_ids, fold.support_id, tuple(fold.train_ids[: args.train_scans]))
    for size in (256, 128):
        t0 = time.perf_counter()
        ds = EpisodeDataset(spec, sub, size=size, seed=0, length=10**6)
        build = time.perf_counter() - t0
        ds[0]
        for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            for i in range(args.episodes):
                ds[i]
            dt = time.perf_counter() - t0
            print(
                f"episodes size {size}: {args.episodes / dt:.1f} episodes/s "
                f"({1000 * dt / args.episodes:.1f} ms each, torch threads {threads}; "
                f"dataset built in {build:.1f} s from {len(sub.train_ids)} scans, {len(ds.entries)} slices)"
            )
        torch.set_num_threads(os.cpu_count() or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
