"""One experiment = one config object: data + model + loss + training + evaluation settings.

An :class:`ExperimentConfig` is built from a named *profile* (``smoke``, ``lite``,
``paper``), the experiment's coordinates (dataset, setting, fold, method, test group) and
command-line style overrides ``"section.field=value"``. It is saved as ``config.json`` in
every run folder and identified by :meth:`ExperimentConfig.config_hash`, a stable hash of
everything that changes the *result* (runtime-only knobs such as the device, the number of
data-loading workers or the checkpoint interval are left out of it, so that the same
experiment run on CPU or GPU shares one run folder name).

Profiles (their values: ``crapnet_core/profiles.yaml``, read by :mod:`crapnet_core.engine.profiles`; Sec. 4.3
of the paper for ``paper``):

- ``smoke``: seconds on a laptop CPU; tiny input, fast CPU encoder, a handful of steps.
  Used by tests and CI (phantom data).
- ``lite``: fast CPU encoder, input size and step count such that one fold trains and
  evaluates in about 3 minutes on 2 CPU cores (first tuned on the test scans of CHAOS fold 0,
  setting 1; from config version 2 re-chosen on the fold's validation scan with
  ``crapnet study analysis select_lite``; see ``results/README.md``). Its prototype grids follow the
  input size (``crapnet_core/models/prototype_grid.py``).
- ``converged``: ``lite`` with the number of steps chosen on validation scans by the doubling rule
  of :mod:`crapnet_core.engine.selection` (20,000; ``results/select_converged/``); a study
  profile, not a book profile.
- ``paper``: DeepLabV3 ResNet-101 encoder, 256 x 256 input, 5 attention blocks,
  100,000 steps of SGD (lr 1e-3, momentum 0.9, weight decay 5e-4, lr x 0.95 every 1000
  steps), one episode per step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..facts import (  # study facts (Sec. 4.2; Tables 1-2 organ order)
    METHODS,
    ORGANS,
    PROFILES,
    RUN_PROFILES,
    SETTING2_GROUPS,
)
from ..io import read_json, write_json
from ..models.config import LossConfig, ModelConfig, convert_value, dataclass_from_dict
from ..models.encoders import CPU_ENCODER  # noqa: F401 (re-exported: the fast CPU encoder of smoke and lite)
from ..models.prototype_grid import check_geometry, prototype_geometry
from .profiles import profile_values

#: Short names for the setting-2 groups (used in run folder names and on the command line).
GROUP_NAMES = {"kidneys": SETTING2_GROUPS[0], "liver_spleen": SETTING2_GROUPS[1]}
#: Bumped when the meaning of a config field changes, so old run folders are not reused.
#: 2: prototype grids derived from the input size (crapnet_core.models.prototype_grid), new model fields
#: (carafe_window, attention, prototypes, free_geometry) and the test-time rule "argmax of
#: the class logits upsampled to the label grid" (metrics of version-1 runs used a 0.5
#: threshold on upsampled probabilities).
CONFIG_VERSION = 2

#: Fields that do not change what is computed (only how fast / where): left out of the hash.
RUNTIME_FIELDS = {
    "data": {"data_root"},
    "model": {"free_geometry"},
    "train": {
        "device",
        "num_workers",
        "threads",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "compile",
        "deterministic",
    },
    "eval": {"batch_size", "save_predictions"},
}


@dataclass
class DataConfig:
    """Which data, which fold, which organs.

    dataset: ``chaos``, ``sabs``, ``phantom`` or a folder path (see ``crapnet_core.data.spec.resolve_dataset``).
    labels: labels file for a folder dataset (None: ``labels.json``/``labels.yaml`` inside it).
    data_root: folder holding ``CHAOST2/`` and ``SABS/`` (None: ``$CRAPNET_DATA_ROOT``).
    setting: 1 (test organs may appear in training slices as background) or 2 (slices
        containing a test organ are never used for training), Sec. 4.2.
    fold: cross-validation fold, 0..n_folds-1.
    test_group: organs evaluated by this run (names of the dataset's label map). Setting 1:
        by default the four benchmark organs; setting 2: by default the kidneys (the paper's
        groups are ``kidneys`` and ``liver_spleen``), and any group of organs of any label map
        can be given (``--group a,b``); its slices are excluded from training.
    input_size: side S of the square network input (slices are resized 256 -> S).
    augment: geometric + intensity augmentation of the query in self-supervised episodes.
    validation: hold the last training scan(s) (sorted order) out of training as the fold's
        validation scans, for choosing settings with ``crapnet evaluate RUN --split validation``
        (``protocol.make_fold``); False for the reported runs (the paper's protocol).
    validation_scans: how many training scans ``validation`` holds out (default 1, the ``lite``
        selection's scan 39 of CHAOS fold 0; 4 holds out CHAOS 36-39 from fold 0, i.e. exactly the
        test scans of fold 4). Left out of the config hash at 1, so earlier runs keep their hash.

    A dataset, labels file or data root given as a relative path that exists is stored as an
    absolute path, so that a run folder can be evaluated from any working directory.
    """

    dataset: str = "phantom"
    labels: str | None = None
    data_root: str | None = None
    setting: int = 1
    fold: int = 0
    n_folds: int = 5
    test_group: tuple[str, ...] = ORGANS
    input_size: int = 256
    augment: bool = True
    validation: bool = False
    validation_scans: int = 1

    def __post_init__(self) -> None:
        from ..data.labels import organ_name

        # NFC: an organ typed in NFD (some keyboards, macOS file names) is the label map's organ
        self.test_group = tuple(organ_name(o) if isinstance(o, str) else o for o in self.test_group)
        if (
            isinstance(self.validation_scans, bool)
            or int(self.validation_scans) != self.validation_scans
            or self.validation_scans < 1
        ):
            raise ValueError(f"data.validation_scans: {self.validation_scans!r} must be a positive integer")
        self.validation_scans = int(self.validation_scans)
        if self.setting not in (1, 2):
            raise ValueError(f"data.setting: {self.setting} must be 1 or 2")
        if self.n_folds < 2:
            raise ValueError(f"data.n_folds: {self.n_folds} must be at least 2")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"data.fold: {self.fold} is out of range 0..{self.n_folds - 1}")
        if self.input_size < 32 or self.input_size % 8:
            raise ValueError(f"data.input_size: {self.input_size} must be a multiple of 8, at least 32")
        if not self.test_group:
            raise ValueError("data.test_group: at least one organ is needed")
        if any(not str(o).strip() for o in self.test_group):
            raise ValueError(f"data.test_group: an organ name is empty in {list(self.test_group)}")
        if len(set(self.test_group)) != len(self.test_group):
            raise ValueError(f"data.test_group: an organ is named twice in {list(self.test_group)}")
        self.dataset, self.labels, self.data_root = _absolute_paths(self.dataset, self.labels, self.data_root)

    @property
    def n_validation(self) -> int:
        """Scans held out of training for validation: ``validation_scans`` when ``validation``, else 0."""
        return self.validation_scans if self.validation else 0

    @property
    def exclude_organs(self) -> tuple[str, ...]:
        """Organs whose slices are dropped from training (setting 2: the test group)."""
        return self.test_group if self.setting == 2 else ()


def _absolute_paths(dataset: str, labels: str | None, data_root: str | None) -> tuple[str, str | None, str | None]:
    """Relative paths that exist (from the current folder) become absolute; names stay names.

    A dataset folder is taken as a folder exactly when ``crapnet_core.data.spec.resolve_dataset`` would
    take it (an existing folder wins over a preset name); a labels argument that is a file
    becomes absolute (a preset name such as ``chaos`` stays).
    """
    import os

    if dataset and not os.path.isabs(dataset) and os.path.isdir(os.path.expanduser(dataset)):
        dataset = os.path.abspath(os.path.expanduser(dataset))
    if labels and not os.path.isabs(labels) and os.path.isfile(os.path.expanduser(labels)):
        labels = os.path.abspath(os.path.expanduser(labels))
    if data_root and not os.path.isabs(data_root) and os.path.isdir(os.path.expanduser(data_root)):
        data_root = os.path.abspath(os.path.expanduser(data_root))
    return dataset, labels, data_root


@dataclass
class SuperpixelConfig:
    """Superpixel pseudo-labels and the episodes drawn from them (Sec. 3.7; SSL-ALPNet "MIDDLE").

    min_size, sigma, scale: Felzenszwalb-Huttenlocher parameters
        (``skimage.segmentation.felzenszwalb``; SSL-ALPNet: 400, 1, 1). They name the
        superpixel cache folder (``superpixels.cache_folder``), the same one that
        ``crapnet superpixels --min-size/--sigma/--scale`` fills.
    min_area: a superpixel is used as an episode's foreground when it covers at least this
        many pixels of the 256 x 256 slice (default 200, half of min_size=400;
        ``episodes.EpisodeDataset``).

    Left out of the config hash while every field is at its default, so runs made before
    this section existed keep their hash.
    """

    min_size: int = 400
    sigma: float = 1.0
    scale: float = 1.0
    min_area: int = 200

    def __post_init__(self) -> None:
        if isinstance(self.min_size, bool) or int(self.min_size) != self.min_size or self.min_size < 1:
            raise ValueError(f"superpixels.min_size: {self.min_size!r} must be a positive integer (pixels)")
        if not float(self.sigma) >= 0:
            raise ValueError(f"superpixels.sigma: {self.sigma!r} must be >= 0 (Gaussian smoothing, pixels)")
        if not float(self.scale) > 0:
            raise ValueError(f"superpixels.scale: {self.scale!r} must be positive")
        if isinstance(self.min_area, bool) or int(self.min_area) != self.min_area or self.min_area < 1:
            raise ValueError(f"superpixels.min_area: {self.min_area!r} must be a positive integer (pixels)")
        self.min_size, self.min_area = int(self.min_size), int(self.min_area)
        self.sigma, self.scale = float(self.sigma), float(self.scale)

    def params(self):
        """The Felzenszwalb parameters as ``superpixels.SuperpixelParams`` (the cache key's part)."""
        from ..data.superpixels import SuperpixelParams

        return SuperpixelParams(min_size=self.min_size, sigma=self.sigma, scale=self.scale)


@dataclass
class TrainConfig:
    """Self-supervised episodic training (Sec. 4.3).

    steps: optimisation steps (one batch of episodes each; paper: 100,000).
    batch_size: episodes per step (paper: 1).
    lr, momentum, weight_decay: SGD (paper: 1e-3, 0.9, 5e-4).
    lr_step, lr_gamma: multi-step schedule, lr x ``lr_gamma`` every ``lr_step`` steps
        (paper: 0.95 every 1000).
    seed: seeds the model initialisation and the episode stream (episode i of the run is
        ``EpisodeDataset(seed=seed)[i]``).
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:k]``.
    amp: bfloat16 autocast on CUDA (ignored on CPU).
    channels_last: channels-last memory format on CUDA.
    num_workers: data-loading workers (-1: automatic, 0 on CPU, 6 on CUDA).
    threads: torch CPU threads (0: all cores).
    checkpoint_every: save a checkpoint every N steps (and always at the end).
    keep_checkpoints: how many ``step_<n>.pt`` files to keep (``last.pt`` is always kept).
    log_every: write a metrics-log row every N steps.
    compile: ``auto`` (default), ``on`` or ``off`` (``true``/``false`` read as on/off): run the
        model through ``torch.compile`` (``engine.training.compile_model``; runtime only, not in
        the config hash; the losses agree with eager ones to float rounding). The compiled code
        is cached in crapnet's cache folder (``$CRAPNET_CACHE/torch_compile``), so only the first
        training of a shape on a machine pays the whole compilation. ``auto`` compiles runs of at
        least 10,000 steps (``AUTO_COMPILE_MIN_STEPS``), where it pays for itself:

        * CPU (measured, ``benchmarks/compile_figures.md``: `lite` CRAPNet, one thread): a
          compiled step takes 1/1.23 of the eager one (0.022 CPU s less), the first compilation
          133 CPU s, a cached one 19 CPU s. It pays after about 6,000 steps on a fresh machine
          and 900 with the cache: not for `lite` (650 steps), for the long runs of a converged
          budget (tens of minutes each, dozens of runs of the same shapes);
        * CUDA (estimated, not yet measured: ``benchmarks/gpu_check.sh``, section ``kernels``,
          measures it): ``reduce-overhead`` replays the step's kernels as CUDA graphs; an eager
          CRAPNet step at paper size dispatches about 1,900 operators, SSL-ALPNet's 1,400
          (``benchmarks/attention_figures.md``, GPU form), and on a large GPU their launch cost
          is of the order of the encoder's compute (issue 21's estimate), against a compilation
          of minutes paid once per machine. A graph that fails to compile under ``auto`` runs
          eagerly.
    deterministic: train under ``torch.use_deterministic_algorithms(True)``
        (:func:`crapnet_core.engine.environment.deterministic`; on CPU it leaves the weights
        unchanged, on CUDA it warns where an op has no deterministic kernel). Runtime only.
    """

    steps: int = 100_000
    batch_size: int = 1
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 1000
    lr_gamma: float = 0.95
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = -1
    threads: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 1
    compile: str = "auto"
    deterministic: bool = True

    def __post_init__(self) -> None:
        value = self.compile
        if isinstance(value, str):
            value = {"true": "on", "false": "off", "yes": "on", "no": "off", "1": "on", "0": "off"}.get(
                value.strip().lower(), value.strip().lower()
            )
        elif isinstance(value, bool):  # configs written before auto existed: compile true/false
            value = "on" if value else "off"
        if value not in ("auto", "on", "off"):
            raise ValueError(f"train.compile: {self.compile!r} is not one of auto, on, off (or true/false)")
        self.compile = value
        if int(self.steps) < 0:
            raise ValueError(f"train.steps: {self.steps} must be at least 0 (0: evaluate the initial weights)")
        for name in ("batch_size", "lr_step", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name}: {getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"train.lr: {self.lr} must be positive")


@dataclass
class EvalConfig:
    """The 1-shot evaluation protocol of SSL-ALPNet (followed by the paper).

    n_parts: chunks of the query organ's slice range; chunk p is matched with the support
        slice at floor(f_p * n), f_p = (2p + 1) / (2 n_parts) (1/6, 1/2, 5/6 for 3).
    batch_size: query slices per forward pass.
    save_predictions: write ``predictions/<scan>_<organ>.nii.gz``.
    """

    n_parts: int = 3
    batch_size: int = 8
    save_predictions: bool = True

    def __post_init__(self) -> None:
        if self.n_parts < 1:
            raise ValueError(f"eval.n_parts: {self.n_parts} must be at least 1")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size: {self.batch_size} must be at least 1")


SECTIONS = {
    "data": DataConfig,
    "superpixels": SuperpixelConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


@dataclass
class ExperimentConfig:
    """Everything that defines one run (saved as ``RUN/config.json``)."""

    profile: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    version: int = CONFIG_VERSION

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"]["test_group"] = list(self.data.test_group)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ExperimentConfig: unknown section(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            if name in data:
                kwargs[name] = dataclass_from_dict(section_cls, dict(data[name]))
        return cls(profile=data.get("profile", "custom"), version=int(data.get("version", CONFIG_VERSION)), **kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON (atomically), with its hash for reference."""
        payload = self.to_dict()
        payload["config_hash"] = self.config_hash()
        return write_json(path, payload)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """The config saved at ``path`` (FileNotFoundError / ValueError naming the file: :func:`~crapnet_core.io.read_json`)."""
        data = read_json(path, what="config file")
        data.pop("config_hash", None)
        return cls.from_dict(data)

    # ------------------------------------------------------------------ identity
    def hashed_dict(self) -> dict[str, Any]:
        """The config without runtime-only fields (what :meth:`config_hash` covers)."""
        from ..data.geometry import DATA_PIPELINE_VERSION

        out = self.to_dict()
        out.pop("profile", None)  # the profile is a name for a set of values, not a value
        for section, names in RUNTIME_FIELDS.items():
            for name in names:
                out[section].pop(name, None)
        if self.data.validation_scans == DataConfig.validation_scans:
            out["data"].pop("validation_scans")  # at the default: the hash of runs made before the field existed
        if self.model.attention_temperature == ModelConfig.attention_temperature:
            out["model"].pop("attention_temperature")  # at the default: the hash of runs made before the field existed
        if self.superpixels == SuperpixelConfig():
            out.pop("superpixels")  # at the defaults: the hash of runs made before the section existed
        # not a setting: the version of how scans become model input (orientation, grid), so
        # that runs made under another version are never reused as if they were these
        out["data_pipeline"] = DATA_PIPELINE_VERSION
        # a registered method's own constants (RPNet's iterations, ADNet's initial threshold...):
        # not config fields, but they decide what the run computes
        from ..models.methods import hashed_constants

        constants = hashed_constants(self.model.method)
        if constants:
            out["method_constants"] = constants
        return out

    def config_hash(self) -> str:
        """12 hex digits of SHA-256 over the canonical JSON of :meth:`hashed_dict`."""
        text = json.dumps(self.hashed_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def dataset_name(self) -> str:
        """Short dataset name for folder names (``chaos``, ``sabs``, ``phantom``, folder name)."""
        name = self.data.dataset
        return name.lower() if name.lower() in ("chaos", "sabs", "phantom") else Path(name).name or "dataset"

    def group_name(self) -> str:
        """``all`` in setting 1, ``kidneys`` / ``liver_spleen`` (or the organ list) in setting 2."""
        if self.data.setting == 1:
            return "all"
        for key, group in GROUP_NAMES.items():
            if tuple(group) == tuple(self.data.test_group):
                return key
        from ..paths import safe_name

        return "-".join(safe_name(o) for o in self.data.test_group)  # organ names never make sub-folders

    def run_name(self) -> str:
        """Folder name of this experiment under a runs root: readable coordinates + hash."""
        return (
            f"{self.dataset_name()}_s{self.data.setting}_{self.group_name()}_f{self.data.fold}"
            f"_{self.model.variant_name()}_{self.profile}_{self.config_hash()}"
        )

    def copy(self) -> ExperimentConfig:
        return copy.deepcopy(self)


# ---------------------------------------------------------------------- profiles
# the profiles' values: crapnet_core/profiles.yaml, read and checked by engine.profiles
def parse_group(value: str | Sequence[str] | int | None, setting: int) -> tuple[str, ...]:
    """Test group from a name (``kidneys``, ``liver_spleen``), an index (0/1), a comma list or None.

    None means every organ in setting 1 and the first group (kidneys) in setting 2.
    """
    if setting not in (1, 2):
        raise ValueError(f"setting: {setting} must be 1 or 2")
    if value is None or value == "" or value == "all":
        return ORGANS if setting == 1 else SETTING2_GROUPS[0]
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        idx = int(value)
        groups = [ORGANS] if setting == 1 else list(SETTING2_GROUPS)
        if not 0 <= idx < len(groups):
            raise ValueError(f"group: {idx} is out of range 0..{len(groups) - 1} for setting {setting}")
        return tuple(groups[idx])
    if isinstance(value, str) and value in GROUP_NAMES:
        return tuple(GROUP_NAMES[value])
    organs = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())
    if setting == 2:
        for group in SETTING2_GROUPS:
            if sorted(group) == sorted(organs):
                return tuple(group)
    return organs


def make_config(
    profile: str = "smoke",
    dataset: str = "phantom",
    setting: int = 1,
    fold: int = 0,
    method: str = "crapnet",
    overrides: Sequence[str] = (),
    test_group: str | Sequence[str] | int | None = None,
) -> ExperimentConfig:
    """Build the config of one experiment.

    ``profile`` picks the preset values, ``dataset``/``setting``/``fold``/``method``/``test_group``
    the coordinates, then ``overrides`` (``"section.field=value"``, applied last, so they win).
    ``test_group`` defaults to all organs (setting 1) or the kidneys (setting 2).
    The prototype grids (``model.carafe_factor``, ``model.alpnet_pool_train/test``) follow
    the input size by the rule of :mod:`crapnet_core.models.prototype_grid` unless set explicitly; see
    :func:`apply_overrides` for the check.
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    from ..models.methods import hook

    values = profile_values(profile, SECTIONS)  # a fresh dict (crapnet_core/profiles.yaml)
    size = int(values.get("data", {}).get("input_size", DataConfig.input_size))
    values.setdefault("model", {}).update(prototype_geometry(size).as_overrides())
    method_values = hook(method, "profile_values")  # a registered method's own values (alpnet_init: 0 steps)
    if method_values is not None:
        for section, items in method_values(profile).items():
            values[section] = dict(values.get(section, {}), **items)
    groups = hook(method, "test_groups")
    if test_group is None and groups is not None:
        test_group = groups(int(setting))[0]  # e.g. alpnet_sup: one organ group per run in both settings
    data = dict(
        values.get("data", {}),
        dataset=str(dataset),
        setting=int(setting),
        fold=int(fold),
        test_group=parse_group(test_group, int(setting)),
    )
    cfg = ExperimentConfig(
        profile=profile,
        data=DataConfig(**data),
        superpixels=SuperpixelConfig(**values.get("superpixels", {})),
        model=ModelConfig(**dict(values.get("model", {}), method=method)),
        loss=LossConfig(**values.get("loss", {})),
        train=TrainConfig(**values.get("train", {})),
        eval=EvalConfig(**values.get("eval", {})),
    )
    cfg = apply_overrides(cfg, overrides)
    check = hook(method, "validate")  # a registered method's own rules (e.g. alpnet_init: 0 steps)
    if check is not None:
        check(cfg)
    return cfg


# ---------------------------------------------------------------------- overrides
# the one converter of "section.field=value" strings (in models.config: summaries are read with it too).
# Hand-written on purpose, not OmegaConf's dotlist: `--set` and the committed overrides use comma lists
# for tuples (data.test_group=liver,spleen), 1e5 for integers and `none` for optional fields, which
# OmegaConf's typing refuses or reads otherwise. OmegaConf reads and checks the profiles (engine.profiles).
_convert = convert_value


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``"section.field=value"`` overrides applied.

    Values are converted to the field's type (``true``/``false`` for booleans, comma lists
    for tuples, ``none`` for optional fields); every section is re-validated.

    Prototype geometry: when ``data.input_size`` is overridden, the grid fields not given
    explicitly (``model.carafe_factor``, ``model.alpnet_pool_train``, ``model.alpnet_pool_test``)
    are re-derived by :func:`crapnet_core.models.prototype_grid.prototype_geometry`; the result is then
    checked by :func:`crapnet_core.models.prototype_grid.check_geometry` (``ValueError`` for cells outside
    a factor 1.5 of the paper's, unless ``model.free_geometry=true``).
    """
    out = cfg.copy()
    pending = {name: asdict(getattr(out, name)) for name in SECTIONS}
    group_given = False
    given: set[str] = set()
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.field=value (e.g. model.n_blocks=7)")
        key, value = item.split("=", 1)
        key = key.strip()
        if key == "profile":
            out.profile = value.strip()
            continue
        if "." not in key:
            raise ValueError(
                f"override {item!r}: expected section.field=value with section one of {', '.join(SECTIONS)}"
            )
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"override {item!r}: unknown section {section!r}; known: {', '.join(SECTIONS)}")
        section_cls = SECTIONS[section]
        hints = typing.get_type_hints(section_cls)
        if name not in {f.name for f in fields(section_cls)}:
            raise ValueError(
                f"override {item!r}: {section_cls.__name__} has no field {name!r}; "
                f"known: {', '.join(f.name for f in fields(section_cls))}"
            )
        given.add(key)
        if section == "data" and name == "test_group":
            pending[section][name] = value  # parsed below, once the setting is known
            group_given = True
        else:
            pending[section][name] = _convert(value, hints[name], key)
    if "data.input_size" in given:
        derived = prototype_geometry(int(pending["data"]["input_size"])).as_overrides()
        for name, value in derived.items():
            if f"model.{name}" not in given:
                pending["model"][name] = value
    data = pending["data"]
    setting = int(data["setting"])
    if group_given:
        data["test_group"] = parse_group(data["test_group"], setting)
    elif setting != cfg.data.setting:
        data["test_group"] = parse_group(None, setting)  # the setting changed: its default group
    for name, section_cls in SECTIONS.items():
        setattr(out, name, section_cls(**pending[name]))
    check_geometry(out)
    return out


def describe(cfg: ExperimentConfig) -> str:
    """One line naming the experiment (for logs and progress bars)."""
    return (
        f"{cfg.dataset_name()} setting {cfg.data.setting} ({cfg.group_name()}) fold {cfg.data.fold} "
        f"{cfg.model.variant_name()} [{cfg.profile}, {cfg.model.encoder}, {cfg.data.input_size}px, "
        f"{cfg.train.steps} steps, hash {cfg.config_hash()}]"
    )


__all__ = [
    "ORGANS",
    "SETTING2_GROUPS",
    "GROUP_NAMES",
    "PROFILES",
    "RUN_PROFILES",
    "CPU_ENCODER",
    "DataConfig",
    "SuperpixelConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "make_config",
    "apply_overrides",
    "parse_group",
    "describe",
    "is_dataclass",
]
