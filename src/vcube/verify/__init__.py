"""`verify`: read sampled chunks of persisted references and of the original files, and compare.

A *target* is what `to_kerchunk` / `to_icechunk` wrote: a Kerchunk JSON file, a Kerchunk Parquet
directory or an Icechunk repository (`targets`). The *sources* are the original files: `against`
(URLs or globs), else the files the target references (Kerchunk: the URLs in the references, the
chunk objects of a Zarr store standing for the store; Icechunk: the `vcube_sources` list in the
commit metadata of the branch's history, else every virtual chunk location). Each source is
opened with the library that owns its format and read raw (`sources`), placed in the target by
its coordinates (`placement`), and for each variable `samples` chunks covered by the sources are
read both ways and compared (`compare`); `report` holds the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import numpy as np

from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError
from vcube.registry import ObjectStoreRegistry, expand_urls, normalize_url
from vcube.stores import ObjectStoreOptions
from vcube.verify.access import add_stores
from vcube.verify.arrays import decoded
from vcube.verify.compare import check_variable
from vcube.verify.placement import place
from vcube.verify.report import Mismatch, TargetKind, VariableCheck, VerifyReport, error_text
from vcube.verify.sources import Readers, source_files, survey
from vcube.verify.targets import open_target

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from vcube.verify.sources import Source

__all__ = [
    "DEFAULT_SAMPLES",
    "Mismatch",
    "TargetKind",
    "VariableCheck",
    "VerifyReport",
    "verify",
]

DEFAULT_SAMPLES: Final = 10


def verify(
    target: str | Path,
    *,
    against: Sequence[str] | str | None = None,
    samples: int | None = DEFAULT_SAMPLES,
    registry: ObjectStoreRegistry | None = None,
    options: ObjectStoreOptions | None = None,
    seed: int = 0,
    branch: str = "main",
) -> VerifyReport:
    """Compare chunks read through persisted references with the original files.

    Parameters
    ----------
    target
        A Kerchunk JSON file, a Kerchunk Parquet directory or an Icechunk repository (a local
        path or a URL).
    against
        Source files (URLs or globs) to compare with; None takes the files the target names.
    samples
        Chunks checked per variable (the first and last always among them); None checks all.
    registry
        Object stores for remote targets and sources; local paths need none.
    options
        How to reach object storage (endpoint, region, anonymous) for buckets `registry` does
        not serve and for an Icechunk repository; credentials come from the environment.
    seed
        Seed of the random choice of chunks.
    branch
        Icechunk branch to read.

    Returns
    -------
    VerifyReport
        Per variable: chunks checked, equal, and the differences.

    Raises
    ------
    SourceNotFoundError
        Nothing at `target`, or a glob of `against` matches no file.
    UnsupportedFormatError
        `target` is not a Kerchunk or Icechunk target, or a source file's format is unknown.
    UnsupportedFeatureError
        A source file's format is one verify cannot read.
    """
    if samples is not None and samples < 1:
        raise UnsupportedFormatError(f"samples must be a positive integer or None, not {samples}")
    options = options or ObjectStoreOptions()
    url = normalize_url(target).rstrip("/")
    patterns = [against] if isinstance(against, str) else list(against or ())
    # A copy: stores are added for the buckets of the sources, known once the target is read.
    given = registry or ObjectStoreRegistry()
    registry = ObjectStoreRegistry({p: given.resolve(p)[0] for p in given.prefixes})
    add_stores(registry, [url, *patterns], options)
    opened = open_target(url, registry, options, branch)
    urls = expand_urls(patterns, registry) if against is not None else opened.sources
    add_stores(registry, urls, options)
    if against is None:
        urls = source_files(urls, registry)
    targets = opened.arrays()
    layout = {name: t.info for name, t in targets.items()}
    coordinates = {d for t in targets.values() for d in t.info.dims or ()}
    coordinates &= {name for name, t in targets.items() if len(t.info.shape) == 1}
    coords = {
        c: decoded(c, targets[c].read((slice(None),)), targets[c].info.cf) for c in coordinates
    }

    failed: dict[str, str] = {}  # source URL -> why it is not compared
    sources: list[Source] = []
    for source_url in urls:
        try:
            sources.append(survey(source_url, registry, layout, coordinates))
        except (UnsupportedFormatError, UnsupportedFeatureError):
            raise
        except Exception as err:  # noqa: BLE001  (a file that cannot be read is a finding)
            failed[source_url] = error_text(err)
    rng = np.random.default_rng(seed)
    checks: list[VariableCheck] = []
    placed: set[str] = set()
    with contextlib.closing(Readers(registry, layout)) as readers:
        for name in sorted(targets):
            placement = place(name, targets[name].info, sources, coords)
            for source_url, why in placement.failed.items():
                failed.setdefault(source_url, why)
            placed |= {b.source.url for b in placement.blocks}
            check = check_variable(name, targets[name], placement.blocks, samples, rng, readers)
            note = placement.note
            if placement.blocks and not check.chunks:
                note = "no chunk lies entirely in the files given"
            checks.append(replace(check, note=note) if note else check)
    for source in sources:
        if source.url not in placed:
            failed.setdefault(source.url, "none of its arrays is in the target")
    problems = [f"{u}: {why}" for u, why in failed.items()]
    if not urls:
        problems.append("no source files: pass against=[...] to name them")
    return VerifyReport(url, opened.kind, tuple(urls), tuple(checks), tuple(problems))
