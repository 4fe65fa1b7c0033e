"""Self-supervised episodic training (Sec. 3.7 and 4.3 of the paper).

One step = one batch of ``train.batch_size`` episodes (paper: 1) from
:class:`crapnet_core.data.episodes.EpisodeDataset`: step ``t`` (0-based) uses the episode
indices ``t * B .. t * B + B - 1``. Episodes are deterministic in ``(seed, index)``, so a
resumed run sees exactly the data the uninterrupted run would have seen; the checkpoint
also restores the model, optimiser, scheduler and random states, hence ``--resume``
reproduces the uninterrupted run's parameters.

Optimisation (Sec. 4.3): SGD, lr 1e-3, momentum 0.9, weight decay 5e-4, lr x 0.95 every
1000 steps (``torch.optim.lr_scheduler.StepLR`` stepped once per step). Loss: Eq. 20
(``losses.episode_loss``: weighted cross-entropy Eq. 18 + lambda x alignment Eq. 19).

Run folder written here::

    RUN/config.json                 the ExperimentConfig (with its hash)
    RUN/environment.json            packages, CPU kernels, threads, device at the start (engine.environment)
    RUN/checkpoints/step_<n>.pt     every ``checkpoint_every`` steps (last ``keep_checkpoints`` kept)
    RUN/checkpoints/last.pt         a copy of the newest step file (its own file: damage to one
                                    leaves the other; ``--resume`` takes the newest intact one)
    RUN/metrics.csv                 step, loss, seg, align, lr, seconds
    RUN/TRAINED                     JSON marker written when every step is done
    RUN/tensorboard/                event files, only when ``tensorboard`` is installed
    RUN/.lock                       held while training (:mod:`crapnet_core.engine.locks`)

One writer per run folder: training holds the folder's lock (a second training into it stops
at once, naming the holder's process), checks before the long work that the folder is
writable and has room for the checkpoints it will keep, and resumes from the newest
checkpoint that reads back, saying which damaged ones it skipped.

Devices: on CUDA, bfloat16 autocast, channels-last tensors, pinned memory and
data-loading workers with prefetching; on CPU, ``torch.set_num_threads`` over the cores
and the episodes made in the main process (measured faster on 2 cores, see
``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, check_output_folder, save_torch
from .checkpoints import (  # re-exported: checkpoint loading lives apart from the training loop
    CHECKPOINT_FORMAT,
    CheckpointMismatch,
    CheckpointUnreadable,
    build_model,
    check_checkpoint,
    checkpoint_dir,
    cpu_threads,
    describe_skipped,
    latest_checkpoint,
    load_model,
    newest_intact_checkpoint,
    read_checkpoint,
    resolve_device,
    step_checkpoints,
)
from .environment import deterministic, write_run_environment
from .experiment import ExperimentConfig, describe
from .locks import RunFolderBusy, lock_holder, run_lock
from .run_folder import (  # re-exported: the run folder's bookkeeping lives apart from the training loop
    CSV_COLUMNS,
    MetricsLog,
    RunFolderError,
    clear_run,
    inspect_run_dir,
    is_trained,
    mark_trained,
    prepare_run_dir,
    read_metrics_csv,
    train_seconds,
)

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------- helpers


def num_workers(cfg: ExperimentConfig, device) -> int:
    """Data-loading workers: ``train.num_workers`` or 0 on CPU / min(6, cores) on CUDA."""
    if cfg.train.num_workers >= 0:
        return int(cfg.train.num_workers)
    return 0 if device.type == "cpu" else max(1, min(6, (os.cpu_count() or 2) - 1))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loss_function(cfg: ExperimentConfig):
    """The episode loss of ``cfg.model.method``: its module's ``episode_loss`` or Eq. 18-20."""
    from ..models.losses import episode_loss
    from ..models.methods import hook

    return hook(cfg.model.method, "episode_loss") or episode_loss


#: ``train.compile=auto`` compiles runs of at least this many training steps (why: ``TrainConfig``).
AUTO_COMPILE_MIN_STEPS = 10_000


def compile_cache_dir() -> Path:
    """Where ``torch.compile`` keeps its compiled code: crapnet's cache folder (``$CRAPNET_CACHE/torch_compile``).

    Sets inductor's ``TORCHINDUCTOR_CACHE_DIR`` (its FX-graph and C++/Triton kernel caches) and
    ``TRITON_CACHE_DIR`` there unless the user set them (inductor's own default, a temporary
    folder it writes into the variable when torchvision is imported, counts as unset), so that a second
    training of the same shapes on this machine reuses what the first one compiled instead of
    compiling in every process (figures: ``benchmarks/compile_figures.md``).
    """
    from ..paths import cache_dir

    root = cache_dir("torch_compile")
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:  # importing torchvision makes inductor write its default (a temporary folder) into the variable
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        inductor_default = os.path.abspath(default_cache_dir())
    except ImportError:  # another torch layout: treat only an unset variable as unset
        inductor_default = None
    if current is None or os.path.abspath(current) == inductor_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return root


def compile_wanted(cfg: ExperimentConfig, device) -> bool:
    """Whether ``train.compile`` (``on``/``off``/``auto``) compiles this run on ``device``.

    ``auto``: runs of at least :data:`AUTO_COMPILE_MIN_STEPS` steps, on CPU or CUDA (the reasons
    and figures are in ``TrainConfig``'s docstring).
    """
    mode = cfg.train.compile
    if mode == "auto":
        return cfg.train.steps >= AUTO_COMPILE_MIN_STEPS
    return mode == "on"


def compile_model(model, device=None, fallback: bool = False):
    """``model`` with its forward and its classifier compiled by ``torch.compile``, in place.

    In place (``nn.Module.compile``), so parameter names and checkpoints are those of the
    eager model. On CUDA in the overhead-reducing mode (``reduce-overhead``: the step's kernels,
    the attention's many small ones among them, replayed as CUDA graphs instead of launched one
    by one); elsewhere inductor's default. The compiled code is cached under
    :func:`compile_cache_dir`. ``fallback``: a graph that fails to compile runs eagerly (with a
    warning) instead of stopping the run (``train.compile=auto``). Figures:
    ``benchmarks/bench_compile.py``.
    """
    import torch

    compile_cache_dir()
    if fallback:
        torch._dynamo.config.suppress_errors = True
    is_cuda = getattr(device, "type", str(device)) == "cuda" if device is not None else False
    mode = "reduce-overhead" if is_cuda else None
    model.compile(mode=mode)
    classifier = getattr(model, "classifier", None)
    if classifier is not None:  # also called on its own by the alignment loss (losses.alignment_loss)
        classifier.compile(mode=mode)
    return model


def uncompile_model(model):
    """Undo :func:`compile_model` in place: the model and its classifier run eagerly again."""
    for module in (model, getattr(model, "classifier", None)):
        if module is not None and getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    return model


def build_episodes(cfg: ExperimentConfig):
    """``(episodes, DatasetSpec, Fold, stats)`` for the run's dataset, fold and setting.

    episodes: :class:`EpisodeDataset` (superpixels), the method's own ``build_episodes`` (e.g.
    alpnet_sup's manual-label episodes) or None when ``train.steps`` is 0.
    """
    from ..data import datasets as ds
    from ..data.episodes import EpisodeDataset
    from ..data.protocol import make_fold
    from ..models.methods import hook

    spec = ds.resolve_dataset(cfg.data.dataset, cfg.data.labels, cfg.data.data_root)
    fold = make_fold(ds.scan_ids(spec), cfg.data.fold, cfg.data.n_folds, validation=cfg.data.n_validation)
    from .inputs import check_group

    check_group(spec, cfg.data.test_group, cfg.data.setting)  # the dataset must label every organ the run is about
    stats = ds.normalization_stats(spec, fold.train_ids)
    if cfg.train.steps == 0:
        return None, spec, fold, stats  # nothing to train on (e.g. alpnet_init)
    custom = hook(cfg.model.method, "build_episodes")  # e.g. alpnet_sup: manual-label episodes
    if custom is not None:
        return custom(cfg, spec, fold, stats), spec, fold, stats
    dataset = EpisodeDataset(
        spec,
        fold,
        exclude_organs=cfg.data.exclude_organs,
        size=cfg.data.input_size,
        seed=cfg.train.seed,
        length=cfg.train.steps * cfg.train.batch_size,
        stats=stats,
        augment=cfg.data.augment,
        min_superpixel_area=cfg.superpixels.min_area,
        superpixel_params=cfg.superpixels.params(),
    )
    return dataset, spec, fold, stats


def make_optimizer(cfg: ExperimentConfig, model):
    """SGD + StepLR as in Sec. 4.3.

    On CPU, PyTorch's fused SGD (one kernel over every parameter instead of a Python loop over
    them: CRAPNet's `lite` model has 115 parameter tensors) when this torch has it: the same
    parameters bit for bit (tests/test_optimizer.py), in less time per step.
    """
    import torch

    params = list(model.parameters())
    args = dict(lr=cfg.train.lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    opt = None
    if params and all(p.device.type == "cpu" for p in params):
        try:
            opt = torch.optim.SGD(params, fused=True, **args)
        except (RuntimeError, ValueError, TypeError):  # torch < 2.4: no fused SGD on CPU
            opt = None
    if opt is None:
        opt = torch.optim.SGD(params, **args)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.train.lr_step, gamma=cfg.train.lr_gamma)
    return opt, sched


def _to_device(batch: dict[str, Any], device, channels_last: bool) -> dict[str, Any]:
    import torch

    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


# ---------------------------------------------------------------------- checkpoints


def _copy_last(step_path: Path) -> None:
    """``last.pt`` = a copy of ``step_path``, written atomically.

    A copy, not a hard link: the two are separate files, so damage to one (a truncated or
    overwritten file) leaves the other intact, and ``--resume`` falls back to it.
    """
    import shutil

    with atomic_path(step_path.parent / "last.pt", suffix=".pt") as tmp:
        shutil.copyfile(step_path, tmp)


def checkpoint_bytes(cfg: ExperimentConfig, run_dir: Path | None = None) -> int:
    """Expected size of one checkpoint of ``cfg`` (bytes): an existing one's, else an estimate.

    The estimate: the model's parameters and buffers plus as much again for SGD's momentum
    buffers, plus 1 MiB (RNG states, config), from the model built on torch's ``meta`` device
    (no memory, no initialisation; pretrained weights are not read). 0 when the model cannot
    be built there.
    """
    if run_dir is not None:
        sizes = [p.stat().st_size for p in checkpoint_dir(run_dir).glob("*.pt") if p.is_file()]
        if sizes:
            return max(sizes)
    import torch

    shape_only = cfg.copy()
    shape_only.model.pretrained = False  # the same tensors; no weights file to look for
    try:
        with torch.device("meta"):
            model = build_model(shape_only)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: no estimate
        return 0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return int(2 * params + buffers + 2**20)


def check_checkpoint_space(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Before training: ``run_dir`` must be writable and hold the checkpoints the run will keep.

    Needed: ``train.keep_checkpoints`` step files + ``last.pt`` + one being written, of
    :func:`checkpoint_bytes` each, less what the run's checkpoint files take already. Raises
    ``OSError`` (``EACCES``/``EROFS``/``ENOSPC``) naming the folder, which ``crapnet`` reports
    in one line.
    """
    size = checkpoint_bytes(cfg, run_dir if run_dir.is_dir() else None)
    n_files = min(max(1, cfg.train.keep_checkpoints), max(1, cfg.train.steps // max(1, cfg.train.checkpoint_every) + 1))
    have = (
        sum(p.stat().st_size for p in checkpoint_dir(run_dir).glob("*.pt") if p.is_file())
        if checkpoint_dir(run_dir).is_dir()
        else 0
    )
    need = max((n_files + 2) * size - have, 2 * size)
    check_output_folder(run_dir, need, what=f"run folder (checkpoints: {n_files} + last.pt of ~{size / 2**20:.0f} MB)")


def save_checkpoint(
    run_dir: Path,
    cfg: ExperimentConfig,
    step: int,
    model,
    optimizer,
    scheduler,
    stats,
    seconds: float,
    intensity: dict | None = None,
) -> Path:
    """Write ``step_<step>.pt`` atomically, copy it to ``last.pt`` (atomically), prune old step files."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "norm_stats": None if stats is None else [float(stats[0]), float(stats[1])],
        "intensity_profile": intensity,  # raw intensities of the training scans (segment checks queries)
        "seconds": float(seconds),
    }
    path = checkpoint_dir(run_dir) / f"step_{step}.pt"
    save_torch(path, state)
    _copy_last(path)
    steps = sorted(step_checkpoints(run_dir).items())
    for _, old in steps[: max(0, len(steps) - max(1, cfg.train.keep_checkpoints))]:
        old.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------- training loop
def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    force: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    wait: bool = False,
) -> Path:
    """Train ``cfg`` into ``run_dir``; returns the final checkpoint (``checkpoints/last.pt``).

    ``resume=True`` continues an interrupted run exactly from its newest intact checkpoint.
    ``on_step(step, losses)`` is called after every completed step (1-based step count).
    The run folder's lock is held while training: another process holding it raises
    :class:`~crapnet_core.engine.locks.RunFolderBusy` naming it (``wait=True``: wait for it).
    Raises :class:`TrainingDiverged` on a NaN/infinite loss (the last good checkpoint stays),
    :class:`RunFolderError` when ``run_dir`` cannot be used as asked, ``OSError`` naming the
    folder when it is not writable or lacks room for the checkpoints (checked before the work).
    """
    from ..models.methods import hook
    from .inputs import check_experiment_inputs

    check = hook(cfg.model.method, "validate")  # a registered method's own rules, before anything is written
    if check is not None:
        check(cfg)
    # Nothing is written to run_dir before the folder, the config and every scan the run
    # needs (training, test and support scans) are checked and the episodes are built: a
    # bad input found here leaves the folder as it was (the superpixel cache may be filled).
    run_dir = Path(run_dir)
    holder = None if wait else lock_holder(run_dir)
    if holder is not None:  # before any long work: another process trains (or evaluates) here
        raise RunFolderBusy(
            f"{run_dir}: run folder in use by {holder}; wait for it to finish (or stop it), "
            f"or choose another output folder"
        )
    inspect_run_dir(cfg, run_dir, resume=resume, force=force)
    check_checkpoint_space(cfg, run_dir)  # writable, room for the checkpoints: before the long work
    check_experiment_inputs(cfg)
    device = resolve_device(cfg.train.device)
    with cpu_threads(cfg, device), deterministic(device, cfg.train.deterministic):
        seed_everything(cfg.train.seed)
        episodes = build_episodes(cfg)
        created = not run_dir.exists()
        try:
            with run_lock(run_dir, wait=wait):
                # under the lock, decided again: another process may have written the folder meanwhile
                run_dir, start = prepare_run_dir(cfg, run_dir, resume=resume, force=force)
                return _train(cfg, run_dir, start, device, progress, on_step, episodes)
        except BaseException:
            if created:
                _remove_if_only_lock(run_dir)
            raise


def _remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run folder this call created when nothing but its lock file is in it."""
    from .locks import LOCK_NAME

    try:
        if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    start: int,
    device,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
    episodes,
) -> Path:
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg.save(run_dir / "config.json")
    write_run_environment(run_dir, device, start)

    episode_loss = loss_function(cfg)

    dataset, spec, fold, stats = episodes
    from ..data.intensities import intensity_profile

    intensity = intensity_profile(spec, fold.train_ids)
    model = build_model(cfg).to(device)
    channels_last = bool(cfg.train.channels_last and device.type == "cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    guard_first_step = False  # train.compile=auto: a compiled first step that fails runs eagerly
    if compile_wanted(cfg, device):
        compile_model(model, device, fallback=cfg.train.compile == "auto")
        guard_first_step = cfg.train.compile == "auto"
        log.info(
            "train.compile=%s: the model is compiled during its first step (code cached in %s)",
            cfg.train.compile,
            os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        )
    optimizer, scheduler = make_optimizer(cfg, model)
    prev_seconds = 0.0
    if start > 0:
        path, state, skipped = newest_intact_checkpoint(run_dir, cfg)
        if path is None:
            raise RunFolderError(
                f"{run_dir}: no checkpoint of this run reads back ({describe_skipped(skipped)}); "
                f"pass --force to start over"
            )
        if skipped:
            log.warning(
                "%s: %s; resuming from %s (step %d)", run_dir, describe_skipped(skipped), path.name, int(state["step"])
            )
        start = int(state["step"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        prev_seconds = float(state.get("seconds", 0.0))
        log.info("%s: resuming at step %d of %d", run_dir, start, cfg.train.steps)
    else:
        seed_everything(cfg.train.seed + 1)  # training-time randomness (dropout...), after the init

    total = cfg.train.steps
    if total == 0:  # an untrained model (alpnet_init): its initial weights are the checkpoint
        save_checkpoint(run_dir, cfg, 0, model, optimizer, scheduler, stats, 0.0)
    if start >= total:
        mark_trained(run_dir, cfg, prev_seconds)
        return run_dir / "checkpoints" / "last.pt"

    B = cfg.train.batch_size
    indices = list(range(start * B, total * B))
    workers = num_workers(cfg, device)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=B,
        sampler=indices,  # sequential: step t <- episodes t*B .. t*B+B-1, the same after a resume
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=False,
        # own generator: creating the iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    metrics_log = MetricsLog(run_dir, start)
    use_amp = bool(cfg.train.amp and device.type == "cuda")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=start,
            desc=f"train f{cfg.data.fold} {cfg.model.method}",
            unit="step",
            dynamic_ncols=True,
        )
    log.info("training %s on %s (%d data workers)", describe(cfg), device, workers)
    t0 = time.time()
    step = start
    model.train()
    try:

        def forward_backward(batch):
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                losses = episode_loss(model, batch, cfg.loss)
            loss = losses["total"]
            value = float(loss.detach())
            if not math.isfinite(value):
                last = latest_checkpoint(run_dir)
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
                raise TrainingDiverged(
                    f"training diverged: loss is {value} at step {step + 1} of {total} "
                    f"(run {run_dir}); {kept}. Try a lower train.lr."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return losses

        for batch in loader:
            batch = _to_device(batch, device, channels_last)
            if guard_first_step:
                guard_first_step = False
                try:
                    losses = forward_backward(batch)
                except TrainingDiverged:
                    raise
                except Exception as err:  # noqa: BLE001 - auto: the compiled code failed, not the run
                    log.warning(
                        "train.compile=auto: the compiled step failed (%s: %s); training eagerly",
                        type(err).__name__,
                        str(err).splitlines()[0] if str(err) else "",
                    )
                    uncompile_model(model)
                    losses = forward_backward(batch)
            else:
                losses = forward_backward(batch)
            optimizer.step()
            scheduler.step()
            step += 1
            seconds = prev_seconds + time.time() - t0
            scalars = {k: float(losses[k].detach()) for k in ("total", "seg", "align")}
            if step % cfg.train.log_every == 0 or step == total:
                metrics_log.write(step, scalars, optimizer.param_groups[0]["lr"], seconds)
            if step % cfg.train.checkpoint_every == 0 or step == total:
                save_checkpoint(run_dir, cfg, step, model, optimizer, scheduler, stats, seconds, intensity)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{scalars['total']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if on_step is not None:
                on_step(step, scalars)
    finally:
        metrics_log.close()
        if bar is not None:
            bar.close()
    seconds = prev_seconds + time.time() - t0
    mark_trained(run_dir, cfg, seconds)
    return run_dir / "checkpoints" / "last.pt"


__all__ = [
    "TrainingDiverged",
    "CheckpointMismatch",
    "CheckpointUnreadable",
    "RunFolderError",
    "RunFolderBusy",
    "train",
    "load_model",
    "build_model",
    "build_episodes",
    "make_optimizer",
    "save_checkpoint",
    "read_checkpoint",
    "check_checkpoint",
    "latest_checkpoint",
    "inspect_run_dir",
    "prepare_run_dir",
    "is_trained",
    "clear_run",
    "read_metrics_csv",
    "resolve_device",
    "train_seconds",
    "loss_function",
    "CSV_COLUMNS",
]
