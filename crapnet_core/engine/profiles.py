"""The values of a training profile, read from the profiles' one definition (``crapnet_core/profiles.yaml``).

A profile (``smoke``, ``lite``, ``converged``, ``paper``; names: :data:`crapnet_core.facts.RUN_PROFILES`)
is section -> field -> value on top of the config dataclasses' defaults; ``based_on`` merges a
profile's values over another's. The file is read with OmegaConf, and every profile's values are
checked against the config sections (OmegaConf structured configs of the dataclasses): an unknown
section or field, or a value that is not of the field's type, is one ``ValueError`` naming the file,
the profile and the key. :func:`crapnet_core.engine.experiment.make_config` starts from these values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

from ..facts import PROFILE_FILE, RUN_PROFILES

#: The keys of one profile's entry in the file.
PROFILE_KEYS = ("book", "about", "based_on", "values")


@lru_cache(maxsize=1)
def _definitions():
    from omegaconf import OmegaConf

    return OmegaConf.load(PROFILE_FILE)


def profile_values(profile: str, sections: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """Section -> field -> value of ``profile`` (a fresh dict), checked against ``sections`` (name -> dataclass).

    Errors (``ValueError``): a profile that is not one of :data:`~crapnet_core.facts.RUN_PROFILES`;
    in the file, an unknown key of the entry, an unknown section or field, a value of the wrong type.
    Read and checked once per process (a study expands hundreds of configs); each call gets a copy.
    """
    if profile not in RUN_PROFILES:
        raise ValueError(f"profile: {profile!r} is not one of {', '.join(RUN_PROFILES)}")
    return copy.deepcopy(_checked_values(profile, tuple(sections.items())))


@cache
def _checked_values(profile: str, sections: tuple[tuple[str, type], ...]) -> dict[str, dict[str, Any]]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    sections = dict(sections)
    spec = _definitions()[profile]
    where = f"{PROFILE_FILE}: profile {profile}"
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(PROFILE_KEYS)}")
    base = spec.get("based_on")
    if base is not None and (base == profile or base not in RUN_PROFILES):
        raise ValueError(f"{where}: based_on {base!r} is not another profile ({', '.join(RUN_PROFILES)})")
    values = OmegaConf.merge(_checked_values(base, tuple(sections.items())) if base else {}, spec.get("values") or {})
    for section, items in values.items():
        if section not in sections:
            raise ValueError(f"{where}: unknown section {section!r}; known: {', '.join(sections)}")
        try:  # the dataclass as an OmegaConf schema: unknown fields and wrong types are refused
            OmegaConf.merge(OmegaConf.structured(sections[section]), items)
        except OmegaConfBaseException as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{where}: {section}.{err.full_key}: {reason}") from None
    return OmegaConf.to_container(values)


__all__ = ["PROFILE_KEYS", "profile_values"]
