"""Which transforms may run, and which code a run asked for.

The allow-list: a run names its transform as `module:function`, and every worker serving the
run imports that module — so whoever can insert into `etl.runs` chooses what every worker
imports. Workers (and the producer) import only modules under the prefixes of
`ETL_TRANSFORM_MODULES`, plus the shipped `etl_worker.transforms`, and check that *before*
importing anything.

The fingerprint: `sha256:<hex>` of the source files of the transform's module and of the
module that defines the callable (when it is another), taken once per process, when the
worker first loads the transform — so it describes the code the process runs, not the file
on disk now. A module with no readable source (a compiled extension) is fingerprinted by its
installed distribution's name and version. The producer records the fingerprint on the run
(at enqueue and again at --resume); a worker whose loaded code differs refuses the run's
partitions (`TransformRefused`: not an attempt, the message comes back for a worker that
fits), and says so once per run, not once per partition.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etl_worker.errors import TransformNotAllowed
from etl_worker.transforms import load_transform

#: Always allowed: the transforms shipped with etl-worker.
SHIPPED_MODULES = ("etl_worker.transforms",)


def allowed_modules(configured: Sequence[str]) -> tuple[str, ...]:
    """The shipped transform modules plus the operator's prefixes (ETL_TRANSFORM_MODULES)."""
    extra = tuple(p.strip() for p in configured if p.strip())
    return SHIPPED_MODULES + tuple(p for p in extra if p not in SHIPPED_MODULES)


def module_of(spec: str) -> str:
    return spec.partition(":")[0]


def is_allowed(module: str, prefixes: Sequence[str]) -> bool:
    """`module` is one of the prefixes or inside one of them as a package (`a.b` is in
    `a`, `ab` is not)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check_allowed(spec: str, prefixes: Sequence[str], what: str = "transform") -> None:
    """Refuse a transform (or a contract: `what`) outside the allow-list, before anything
    is imported: both are code every worker imports because a run row names it."""
    module = module_of(spec)
    if not is_allowed(module, prefixes):
        raise TransformNotAllowed(
            f"{what} {spec!r}: module {module!r} is not on the allow-list "
            f"({', '.join(prefixes)}) — add its package to ETL_TRANSFORM_MODULES on the "
            "workers and the producer (comma-separated module prefixes), then restart the workers"
        )


@dataclass(frozen=True)
class LoadedTransform:
    spec: str
    fingerprint: str | None


def load_checked(spec: str, prefixes: Sequence[str]) -> LoadedTransform:
    """Check the allow-list, then import the transform and fingerprint it (once per process
    for each spec: the fingerprint of the code this process keeps running)."""
    check_allowed(spec, prefixes)
    return _load(spec)


@functools.cache
def _load(spec: str) -> LoadedTransform:
    function = load_transform(spec)
    return LoadedTransform(spec, fingerprint_of(spec, function))


def fingerprint_of(spec: str, function: object) -> str | None:
    """`sha256:<16 hex>` over the source of the spec's module and of the callable's own
    module; `dist <name>==<version>` when a module has no source; None when neither."""
    names = [module_of(spec)]
    defined_in = getattr(function, "__module__", None)
    if isinstance(defined_in, str) and defined_in not in names:
        names.append(defined_in)
    digest = hashlib.sha256()
    for name in names:
        module = sys.modules.get(name)
        source = _source_file(module)
        if source is not None:
            digest.update(name.encode() + b"\0" + source.read_bytes() + b"\0")
            continue
        version = _distribution_version(name)
        if version is None:
            return None
        digest.update(f"{name}\0{version}\0".encode())
        if len(names) == 1:
            return f"dist {version}"
    return "sha256:" + digest.hexdigest()[:16]


def _source_file(module: object) -> Path | None:
    if module is None:
        return None
    try:
        path = inspect.getsourcefile(module)  # type: ignore[arg-type]
    except TypeError:  # a built-in module
        return None
    if path is None:
        return None
    source = Path(path)
    return source if source.is_file() else None


def _distribution_version(module: str) -> str | None:
    top = module.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top) or []
    for dist in dists:
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def refusal_message(spec: str, loaded: str | None, wanted: str) -> str:
    """What a worker says when its loaded transform is not the one the run wants."""
    return (
        f"restart the workers: they run transform {spec} version {loaded or 'unknown'}, "
        f"the run wants {wanted} (the transform's source changed since these workers "
        "loaded it)"
    )
