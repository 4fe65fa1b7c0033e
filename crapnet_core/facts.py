"""Study facts: the one place that names the organs, label maps, methods, settings and profiles.

The bottom of the package: it imports nothing from crapnet, so every layer (data, models,
engine, report, book, cli) may import it. Source: the paper's Sec. 4.1-4.2 and Tables 1-4
(organ order LK, RK, Spleen, Liver), the CHAOS and Synapse label maps of SSL-ALPNet's
pre-processing, and this project's profiles (book/reproduce.md).

Adding a method: its module in ``crapnet_core/models/methods/`` plus one line in
:data:`METHODS_REGISTRY` (the contract of such a module: :mod:`crapnet_core.models.methods`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

#: Organs of the few-shot benchmark, in the column order of the paper's tables.
ORGANS = ("left_kidney", "right_kidney", "spleen", "liver")
#: Column names of the paper's tables, per organ.
ORGAN_SHORT = {"left_kidney": "LK", "right_kidney": "RK", "spleen": "Spleen", "liver": "Liver"}

#: Label value per organ in the label volumes (CHAOS T2-SPIR, Synapse/SABS CT).
CHAOS_LABELS: dict[str, int] = {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
SABS_LABELS: dict[str, int] = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}


class Method(NamedTuple):
    """One line of the method registry.

    label: display name (the row name of the paper's tables, or of the method's own paper).
    attention: support-query attention (Eq. 1-13) on by default (``model.attention=auto``).
    prototypes: default prototype kind (``carafe``, ``avgpool``, ``global``).
    module: None for a method built into ``FewShotSegmenter`` (``crapnet_core/models/segmenter.py``),
        else its module in ``crapnet_core/models/methods/``.
    published: one of the paper's own methods: the book runs it, and cross-validation
        summaries compare it with the paper's row ``label`` (Tables 1-2).
    """

    label: str
    attention: bool
    prototypes: str
    module: str | None = None
    published: bool = False


#: The method registry: key (``model.method``, ``--method``) -> :class:`Method`. One line per method.
METHODS_REGISTRY: dict[str, Method] = {
    "crapnet": Method("CRAPNet", True, "carafe", published=True),
    "alpnet": Method("SSL-ALPNet", False, "avgpool", published=True),
    "panet": Method("SSL-PANet", False, "global", published=True),
    "alpnet_init": Method("ALPNet-init", False, "avgpool", module="alpnet_init"),
    "alpnet_sup": Method("ALPNet", False, "avgpool", module="alpnet_sup"),
    "rpnet": Method("SSL-RPNet", False, "global", module="rpnet"),
    "adnet": Method("ADNet", False, "global", module="adnet"),
    "qnet": Method("Q-Net", False, "global", module="qnet"),
}
#: Method keys, in registry order.
METHODS = tuple(METHODS_REGISTRY)
#: The paper's own methods (CRAPNet and its two baselines): what the book runs.
PAPER_METHODS = tuple(k for k, m in METHODS_REGISTRY.items() if m.published)
#: Display names of the methods.
METHOD_LABELS = {k: m.label for k, m in METHODS_REGISTRY.items()}

#: Settings of the paper (Sec. 4.2): 1 = test organs may appear in training images,
#: 2 = training slices containing a test organ are removed.
SETTINGS = (1, 2)
#: Setting 2 test groups (Sec. 4.2): one model per group, trained without it.
SETTING2_GROUPS: tuple[tuple[str, ...], ...] = (("left_kidney", "right_kidney"), ("liver", "spleen"))
#: Cross-validation folds of the paper (5-fold).
FOLDS = (0, 1, 2, 3, 4)

#: The paper's ablation axes: attention blocks per branch (Table 3), branches (Table 4).
TABLE3_BLOCKS = (1, 5, 7, 9, 12, 15)
TABLE4_BRANCHES = (2, 1)

#: The profiles' one definition (names, whether the book builds them, values): ``crapnet_core/profiles.yaml``;
#: the values are read by :mod:`crapnet_core.engine.profiles`.
PROFILE_FILE = Path(__file__).with_name("profiles.yaml")


def _profile_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(RUN_PROFILES, PROFILES)`` from :data:`PROFILE_FILE`, in its order."""
    import yaml

    data = yaml.safe_load(PROFILE_FILE.read_text(encoding="utf-8"))
    return tuple(data), tuple(name for name, spec in data.items() if spec.get("book"))


#: Training profiles: the book's, plus ``converged`` (lite's geometry at the budget chosen on validation
#: scans in results/select_converged/, issue 18), which the study declares but no book profile trains.
#: Book profiles (``book: true``; the book profile and the training profile of its runs share the name).
RUN_PROFILES, PROFILES = _profile_names()

#: Sub-folder of the data root holding each real dataset (in the order a notebook run by
#: hand prefers them).
DATASET_FOLDERS = {"chaos": "CHAOST2", "sabs": "SABS"}
#: Short dataset titles (book pages, plan, footer).
DATASET_TITLES = {"chaos": "CHAOS-T2 MRI", "sabs": "Synapse/SABS CT", "phantom": "synthetic phantom"}
#: Short dataset names of the generated tables (book pages, results/README.md).
DATASET_SHORT = {"chaos": "CHAOS MRI", "sabs": "Synapse CT", "phantom": "phantom"}
#: Dataset names as the paper's tables head them (figures, captions).
DATASET_LABELS = {"chaos": "Abdominal-MRI (CHAOS)", "sabs": "Abdominal-CT (Synapse)", "phantom": "phantom (synthetic)"}

__all__ = [
    "ORGANS",
    "ORGAN_SHORT",
    "CHAOS_LABELS",
    "SABS_LABELS",
    "Method",
    "METHODS_REGISTRY",
    "METHODS",
    "PAPER_METHODS",
    "METHOD_LABELS",
    "SETTINGS",
    "SETTING2_GROUPS",
    "FOLDS",
    "TABLE3_BLOCKS",
    "TABLE4_BRANCHES",
    "PROFILES",
    "RUN_PROFILES",
    "PROFILE_FILE",
    "DATASET_FOLDERS",
    "DATASET_TITLES",
    "DATASET_SHORT",
    "DATASET_LABELS",
]
