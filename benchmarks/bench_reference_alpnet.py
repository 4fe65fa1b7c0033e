"""SSL-ALPNet's own training step (its public code) against ours at paper size, side by side.

    # the reference code (Ouyang et al., ECCV 2020; MIT licence), fetched once:
    git clone https://github.com/cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation ssl-alpnet
    PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/bench_reference_alpnet.py --reference ssl-alpnet \
        [--size 256] [--rounds 4] [--steps 1] [--warmup 1] [--threads 1] [--out benchmarks/reference_alpnet]

``--reference`` is a checkout of that repository, or its bare git directory (the files are read
with ``git show``). Nothing of it is copied into this project: its ``models/`` package is imported
from a temporary folder.

One process, one thread, random weights (no COCO initialisation), one synthetic episode of
``--size`` pixels (one support, one query, batch 1). The models, each with its own training step:

* ``ssl-alpnet (reference)``: its ``models.grid_proto_fewshot.FewShotSeg`` with the configuration of
  its ``config_ssl_upload.py`` (``dlfcn_res101`` encoder, prototype grid 8 on 32 x 32 features,
  alignment loss on) and the step of its ``training.py``: cross-entropy with class weights
  (0.05, 1.0), plus the alignment loss, backward, SGD (lr 1e-3, momentum 0.9, weight decay 5e-4);
* ``alpnet`` and ``crapnet``: ours, ``paper`` profile (``model.pretrained=false``), the step of
  ``crapnet train`` (``episode_loss``, backward, ``make_optimizer``'s SGD).

Two shims make the reference run on a CPU-only torch, nothing else is changed: ``Tensor.cuda``
returns the tensor itself (the reference moves a constant to the GPU inside its normalisation),
and torchvision's ``deeplabv3_resnet101`` is called without downloading ImageNet weights for the
backbone (random weights, as ours). The steps alternate in ``--rounds`` rounds of ``--steps``
steps per model, the order rotated each round; reported: median process CPU seconds per step
and each model's ratio to the reference within a round (median, range).
"""

from __future__ import annotations

import argparse
import io
import os
import site
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # crapnet_core is imported as installed or from PYTHONPATH

#: SSL-ALPNet's config_ssl_upload.py, model section (values used by its training.py).
REFERENCE_MODEL_CONFIG = {
    "align": True,
    "use_coco_init": False,
    "which_model": "dlfcn_res101",
    "cls_name": "grid_proto",
    "proto_grid_size": 8,
    "feature_hw": [32, 32],
}


def reference_sources(path: Path, dest: Path) -> str:
    """Put the reference's ``models/`` package under ``dest``; returns the commit it came from."""
    git_dir = path if (path / "HEAD").is_file() and not (path / ".git").exists() else path / ".git"
    if git_dir.exists():
        commit = subprocess.run(
            ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "--git-dir", str(git_dir), "archive", "HEAD", "models"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        return commit
    if not (path / "models" / "grid_proto_fewshot.py").is_file():
        raise SystemExit(f"--reference {path}: not a checkout of SSL-ALPNet (no models/grid_proto_fewshot.py)")
    import shutil

    shutil.copytree(path / "models", dest / "models")
    return "working tree"


def cpu_shims() -> None:
    """The two changes that let the reference run on a CPU-only torch (module docstring)."""
    import torch

    from crapnet_core.models._torchvision import segmentation_models

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    seg = segmentation_models()
    original = seg.deeplabv3_resnet101

    def deeplabv3_resnet101(pretrained=False, **kwargs):
        if pretrained:
            raise SystemExit("the reference benchmark uses random weights (use_coco_init=False)")
        if kwargs.pop("weights", None) is not None or kwargs.pop("weights_backbone", None) is not None:
            raise SystemExit("the reference benchmark uses random weights (model.pretrained=false)")
        return original(weights=None, weights_backbone=None, **kwargs)

    seg.deeplabv3_resnet101 = deeplabv3_resnet101
    import torchvision

    torchvision.models.segmentation.deeplabv3_resnet101 = deeplabv3_resnet101


class ReferenceStep:
    """SSL-ALPNet's training step (its training.py) on one fixed episode."""

    def __init__(self, batch: dict) -> None:
        import torch
        from models.grid_proto_fewshot import FewShotSeg  # the reference's package

        torch.manual_seed(0)
        self.model = FewShotSeg(pretrained_path=None, cfg=dict(REFERENCE_MODEL_CONFIG)).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        self.criterion = torch.nn.CrossEntropyLoss(ignore_index=255, weight=torch.tensor([0.05, 1.0]))
        fg = (batch["support_mask"] == 1).float()
        self.inputs = ([[batch["support_image"]]], [[fg]], [[1.0 - fg]], [batch["query_image"]])
        self.labels = batch["query_mask"].long()

    def step(self) -> float:
        self.opt.zero_grad()
        pred, align_loss, _, _ = self.model(*self.inputs, isval=False, val_wsize=None)
        loss = self.criterion(pred, self.labels) + align_loss
        loss.backward()
        self.opt.step()
        return float(loss.detach())


class OurStep:
    """Our ``paper``-profile training step for ``method``."""

    def __init__(self, method: str, batch: dict) -> None:
        from crapnet_core.engine.experiment import make_config
        from crapnet_core.engine.training import build_model, loss_function, make_optimizer

        self.cfg = make_config("paper", "phantom", 1, 0, method, ["model.pretrained=false", "train.threads=1"])
        self.model = build_model(self.cfg).train()
        self.loss_fn = loss_function(self.cfg)
        self.opt, _ = make_optimizer(self.cfg, self.model)
        self.batch = batch

    def step(self) -> float:
        loss = self.loss_fn(self.model, self.batch, self.cfg.loss)["total"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout (or bare git dir) of SSL-ALPNet")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = ap.parse_args()
    import torch
    from bench_attention import episode, machine  # a sibling script: benchmarks/ is the script's own path entry

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ssl-alpnet-") as tmp:
        commit = reference_sources(args.reference, Path(tmp))
        # the reference imports its own top-level packages (`models`, ...): its folder on the import path,
        # through the standard library's documented way of adding one
        site.addsitedir(tmp)
        cpu_shims()
        batch = episode(args.size)
        steppers = {
            "ssl-alpnet (reference)": ReferenceStep(batch),
            "alpnet": OurStep("alpnet", batch),
            "crapnet": OurStep("crapnet", batch),
        }
        names = list(steppers)
        for s in steppers.values():
            for _ in range(args.warmup):
                s.step()
        cpu = {n: [] for n in names}
        for r in range(args.rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                c = time.process_time()
                for _ in range(args.steps):
                    steppers[n].step()
                cpu[n].append((time.process_time() - c) / args.steps)
                print(n, round(cpu[n][-1], 3), flush=True)
    ref = cpu["ssl-alpnet (reference)"]
    rows = {
        n: {
            "cpu_s": statistics.median(v),
            "ratio": statistics.median([a / b for a, b in zip(v, ref)]),
            "ratio_min": min(a / b for a, b in zip(v, ref)),
            "ratio_max": max(a / b for a, b in zip(v, ref)),
        }
        for n, v in cpu.items()
    }
    m = machine()
    lines = [
        "# SSL-ALPNet's own training step against ours (issue 21)",
        "",
        f"Produced by `benchmarks/bench_reference_alpnet.py {' '.join(sys.argv[1:])}`; reference commit "
        f"`{commit}` of github.com/cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation; ours at "
        f"commit {m['commit']}. {m['cpu']}, {args.threads} torch thread, torch {m['torch']}; load average "
        f"{', '.join(f'{x:.1f}' for x in load_start)} at the start, {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "at the end (a shared machine; nice 15): compare the ratios, measured side by side.",
        "",
        f"ResNet-101 encoders (DeepLabV3 backbone, output stride 8), {args.size} x {args.size} px, random weights, "
        f"one synthetic episode; {args.rounds} rounds x {args.steps} step(s) per model, order rotated each round, "
        "after "
        f"{args.warmup} warm-up step(s). Ratio = CPU seconds per step / the reference's in the same round.",
        "",
        "| model | CPU s/step | ratio to SSL-ALPNet's code | range |",
        "|---|---|---|---|",
    ]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['cpu_s']:.3f} | **{r['ratio']:.3f}** | {r['ratio_min']:.3f}-{r['ratio_max']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from crapnet_core.io import write_json, write_text

        write_json(
            args.out.with_suffix(".json"),
            {"rows": rows, "cpu_s": cpu, "reference_commit": commit, "machine": m, "load_start": load_start},
        )
        write_text(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
