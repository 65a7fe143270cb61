"""Derivative file names from the BIDS schema shipped with pybids (``bidsschematools``).

A name carries the source image's entities and ``trc-``, ``space-``, ``res-``, ``desc-``, as far as the target file
rule allows them, in the schema's entity order (so ``trc-`` comes before ``run-``:
``sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.nii.gz``), then the suffix. A PET name carries only the
subject, session and run of its T1w: a PET derivative has no ``acq-`` or ``ce-`` entity, and its ``rec-`` means a
PET reconstruction, not the MR one (the query refuses inputs that would then collide). Transforms (``_xfm``) have
no rule in the specification: they are named as fMRIPrep names them and listed in ``.bidsignore``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from bidsschematools import schema as bids_schema

TEMPLATE_SPACE = "MNI152NLin2009aSym"
NATIVE_SPACE = "T1w"
DERIVED_ENTITIES = ("trc", "space", "res", "desc")
PET_SOURCE_ENTITIES = ("sub", "ses", "run")
TRANSFORM_GLOB = "*_xfm.*"


@lru_cache(maxsize=1)
def _schema() -> Any:
    return bids_schema.load_schema()


@lru_cache(maxsize=None)
def _entity_order() -> tuple[str, ...]:
    """Short entity keys (sub, ses, ..., desc) in the order the specification fixes for file names."""
    schema = _schema()
    return tuple(schema.objects.entities[name].name for name in schema.rules.entities)


@lru_cache(maxsize=None)
def _allowed_entities(suffix: str, datatype: str) -> frozenset[str]:
    """Short entity keys that the derivative file rule for ``datatype/suffix`` accepts."""
    schema = _schema()
    for rules in schema.rules.files.deriv.values():
        for rule in rules.values():
            if suffix in (rule.get("suffixes") or []) and datatype in (rule.get("datatypes") or []):
                if "template" in rule.entities:
                    continue
                return frozenset(schema.objects.entities[name].name for name in rule.entities)
    raise ValueError(f"the BIDS schema has no derivative rule for {datatype}/*_{suffix}")


def _join_entities(entities: Mapping[str, str]) -> str:
    order = _entity_order()
    ordered = sorted(entities.items(), key=lambda item: order.index(item[0]))
    for key, value in ordered:
        if not str(value).isalnum():
            raise ValueError(f"BIDS label {key}-{value} must be letters and digits only")
    return "_".join(f"{key}-{value}" for key, value in ordered)


def _datatype_for(suffix: str) -> str:
    return "pet" if suffix == "pet" else "anat"


def derivative_name(
    source_entities: Mapping[str, str],
    *,
    space: str,
    desc: str | None,
    suffix: str,
    extension: str,
    trc: str | None = None,
    res: str | None = None,
) -> str:
    """``sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.nii.gz`` from the source's short-key entities."""
    datatype = _datatype_for(suffix)
    allowed = _allowed_entities(suffix, datatype)
    carried = PET_SOURCE_ENTITIES if datatype == "pet" else allowed
    entities = {
        key: value
        for key, value in source_entities.items()
        if key in allowed and key in carried and key not in DERIVED_ENTITIES
    }
    derived = {"trc": trc, "space": space, "res": res, "desc": desc}
    entities.update({key: value for key, value in derived.items() if value is not None and key in allowed})
    return f"{_join_entities(entities)}_{suffix}{extension}"


def _subject_folder(source_entities: Mapping[str, str], datatype: str) -> Path:
    folder = Path(f"sub-{source_entities['sub']}")
    if "ses" in source_entities:
        folder /= f"ses-{source_entities['ses']}"
    return folder / datatype


def derivative_path(
    source_entities: Mapping[str, str],
    *,
    space: str,
    desc: str | None,
    suffix: str,
    extension: str,
    trc: str | None = None,
    res: str | None = None,
) -> Path:
    """The output path relative to the derivative dataset: ``sub-01/[ses-A/]pet/<derivative_name>``."""
    name = derivative_name(
        source_entities, space=space, desc=desc, suffix=suffix, extension=extension, trc=trc, res=res
    )
    return _subject_folder(source_entities, _datatype_for(suffix)) / name


def transform_path(
    source_entities: Mapping[str, str], *, from_space: str, to_space: str, extension: str, mode: str = "image"
) -> Path:
    """``sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5`` (fMRIPrep's convention)."""
    allowed = _allowed_entities("mask", "anat")
    entities = {key: value for key, value in source_entities.items() if key in allowed and key not in DERIVED_ENTITIES}
    for label in (from_space, to_space, mode):
        if not label.isalnum():
            raise ValueError(f"BIDS label {label!r} must be letters and digits only")
    name = f"{_join_entities(entities)}_from-{from_space}_to-{to_space}_mode-{mode}_xfm{extension}"
    return _subject_folder(source_entities, "anat") / name


def image_key(file_name: str) -> tuple[str | None, str | None]:
    """(session, run) of an output file from its name: which image of a participant the file belongs to."""
    entities = dict(part.split("-", 1) for part in file_name.split(".", 1)[0].split("_") if "-" in part)
    return entities.get("ses"), entities.get("run")
