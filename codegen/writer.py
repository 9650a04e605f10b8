"""Catalog directories, the registry (``_registry.json``) and atomic writes of generated modules.

A catalog directory holds one module per entry (``<name>.py``, plus ``<name>.npz`` for Hermite-table entries)
and ``_registry.json``, which records for every entry its source expression, parameters, method, error
figures, the sha256 of its files, the generator and engine versions and the full
:class:`~dualact.symbolic.derivation.Derivation` (so ``dualact catalog regenerate`` need not re-derive).

Two directories are searched, the first one that has a name wins:

1. the user catalog: ``$DUALACT_CATALOG`` if set, else ``~/.cache/dualact/catalog`` (``$XDG_CACHE_HOME``);
2. the built-in catalog: the folder of the ``dualact.catalog`` package.

``dualact add`` writes into the built-in folder when it is a writable source checkout (the folder sits next to
dualact's ``pyproject.toml``) and ``$DUALACT_CATALOG`` is unset, otherwise into the user catalog.

This module imports only the standard library at load time (``dualact.catalog`` uses it on import).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY_NAME = "_registry.json"
REGISTRY_FORMAT = 1
ENV_VAR = "DUALACT_CATALOG"


# ---------------------------------------------------------------------------------------------------------
# directories


def builtin_catalog_dir() -> Path:
    """The folder of the ``dualact.catalog`` package."""
    import dualact.catalog

    return Path(dualact.catalog.__file__).resolve().parent


def user_catalog_dir() -> Path:
    """``$DUALACT_CATALOG``, else ``$XDG_CACHE_HOME/dualact/catalog`` (default ``~/.cache/...``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dualact" / "catalog"


def is_source_checkout(directory: Path | None = None) -> bool:
    """Whether ``directory`` (default: the built-in catalog) is the writable catalog/ of a checkout."""
    directory = Path(directory) if directory is not None else builtin_catalog_dir()
    pyproject = directory.parent / "pyproject.toml"
    if directory.name != "catalog" or not pyproject.is_file():
        return False
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "dualact"' in text and os.access(directory, os.W_OK)


def catalog_dirs() -> list[Path]:
    """Directories searched for entries, in order of precedence (user catalog first)."""
    user, builtin = user_catalog_dir(), builtin_catalog_dir()
    dirs = [user] if user.resolve() != builtin else []
    return dirs + [builtin]


def default_target_dir() -> Path:
    """Where ``dualact add`` writes (see the module docstring)."""
    if not os.environ.get(ENV_VAR) and is_source_checkout():
        return builtin_catalog_dir()
    return user_catalog_dir()


# ---------------------------------------------------------------------------------------------------------
# registry


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    try:
        return sha256_bytes(Path(path).read_bytes())
    except OSError:
        return None


def empty_registry() -> dict[str, Any]:
    return {"format": REGISTRY_FORMAT, "entries": {}}


def read_registry(directory: Path) -> dict[str, Any]:
    """The registry of one catalog directory (an empty one if the file is missing)."""
    path = Path(directory) / REGISTRY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty_registry()
    except (OSError, ValueError) as exc:
        from dualact.errors import CatalogError

        raise CatalogError(f"cannot read the catalog registry {path}: {exc}") from exc
    data.setdefault("entries", {})
    return data


def registry_text(registry: dict[str, Any]) -> str:
    return json.dumps(registry, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Located:
    """A catalog entry found on disk."""

    name: str
    directory: Path
    record: dict[str, Any]

    @property
    def module_path(self) -> Path:
        return self.directory / self.record.get("file", f"{self.name}.py")


def find_entry(name: str) -> Located | None:
    for directory in catalog_dirs():
        entries = read_registry(directory)["entries"]
        if name in entries:
            return Located(name, directory, entries[name])
    return None


def all_entries() -> dict[str, Located]:
    """Every visible entry (the user catalog shadows the built-in one)."""
    out: dict[str, Located] = {}
    for directory in reversed(catalog_dirs()):
        for name, rec in read_registry(directory)["entries"].items():
            out[name] = Located(name, directory, rec)
    return dict(sorted(out.items()))


def engine_version() -> str | None:
    """``dualact.symbolic.derive.ENGINE_VERSION`` if the engine defines one."""
    try:
        from dualact.symbolic import derive as _derive
    except Exception:  # noqa: BLE001 - engine not importable: no version to compare
        return None
    v = getattr(_derive, "ENGINE_VERSION", None)
    return None if v is None else str(v)


def error_bound(accuracy: dict[str, Any] | None) -> float | None:
    """The headline error figure of an accuracy record (``error_bound``, else the largest ``*err*`` value)."""
    if not accuracy:
        return None
    if isinstance(accuracy.get("error_bound"), (int, float)):
        return float(accuracy["error_bound"])
    vals = [
        float(v)
        for k, v in accuracy.items()
        if "err" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return max(vals) if vals else None


def make_record(
    name: str, derivation, emitted, *, origin: str = "user", engine: str | None = None
) -> dict[str, Any]:
    """The registry record of one entry (``emitted``: :class:`dualact.codegen.emit.EmittedModule`)."""
    import sympy as sp

    from .emit import GENERATOR_VERSION

    files = emitted.files
    rec = {
        "name": name,
        "kind": emitted.kind,
        "source": derivation.source,
        "params": {p: derivation.param_values.get(p) for p in derivation.params},
        "method": derivation.method,
        "tier": derivation.tier,
        "homogeneity": derivation.homogeneity,
        "accuracy": derivation.accuracy,
        "error_bound": error_bound(derivation.accuracy),
        "file": f"{name}.py",
        "sha256": sha256_bytes(files[f"{name}.py"]),
        "npz": f"{name}.npz" if emitted.npz is not None else None,
        "npz_sha256": sha256_bytes(emitted.npz) if emitted.npz is not None else None,
        "generator_version": GENERATOR_VERSION,
        "engine_version": engine,
        "sympy_version": sp.__version__,
        "derivation_sha256": derivation.content_hash(),
        "derivation": derivation.to_json_dict(),
        "origin": origin,
    }
    return rec


# ---------------------------------------------------------------------------------------------------------
# atomic writes


def _write_temp(directory: Path, final_name: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


@contextlib.contextmanager
def _locked(directory: Path):
    """Serialise registry updates of one directory across processes (advisory lock in the temp dir)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"dualact-catalog-{key}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def commit_files(directory: Path, files: dict[str, bytes], registry: dict[str, Any]) -> None:
    """Write ``files`` and then the registry into ``directory`` atomically.

    Every temporary file is written first; only when all of them exist are they renamed into place
    (``os.replace``), the registry last, so an interruption never leaves a registry that points at missing or
    half-written modules.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for fname, data in sorted(files.items()):
            staged.append((_write_temp(directory, fname, data), directory / fname))
        reg = registry_text(registry).encode("utf-8")
        staged.append((_write_temp(directory, REGISTRY_NAME, reg), directory / REGISTRY_NAME))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    for fname in files:
        if fname.endswith(".py"):
            sys.modules.pop(f"dualact.catalog.{fname[:-3]}", None)


def write_entries(
    directory: Path, items: list[tuple[str, Any, Any]], *, origin: str = "user", rederived: bool = True
) -> dict[str, Any]:
    """Write generated modules and update the registry of ``directory``.

    ``items``: ``(name, derivation, emitted)`` triples; ``rederived``: the derivations are fresh (record the
    current engine version) rather than reused from the registry. Returns the new registry.
    """
    directory = Path(directory)
    current_engine = engine_version() if rederived else None
    with _locked(directory):
        return _write_entries_locked(directory, items, origin, rederived, current_engine)


def _write_entries_locked(directory, items, origin, rederived, current_engine):
    registry = read_registry(directory)
    files: dict[str, bytes] = {}
    for name, derivation, emitted in items:
        old = registry["entries"].get(name) or {}
        engine = current_engine if rederived or "engine_version" not in old else old["engine_version"]
        rec = make_record(name, derivation, emitted, origin=old.get("origin", origin), engine=engine)
        registry["entries"][name] = rec
        files.update(emitted.files)
    registry["format"] = REGISTRY_FORMAT
    registry["entries"] = dict(sorted(registry["entries"].items()))
    commit_files(directory, files, registry)
    return registry


def remove_entry(directory: Path, name: str) -> None:
    """Delete an entry's files and its registry record."""
    directory = Path(directory)
    with _locked(directory):
        registry = read_registry(directory)
        rec = registry["entries"].pop(name, None)
        if rec is None:
            from dualact.errors import CatalogError

            raise CatalogError(f"no catalog entry {name!r} in {directory}")
        commit_files(directory, {}, registry)
    for key in ("file", "npz"):
        if rec.get(key):
            (directory / rec[key]).unlink(missing_ok=True)
    sys.modules.pop(f"dualact.catalog.{name}", None)


# ---------------------------------------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Problem:
    name: str
    status: str  # "missing", "edited", "stale", "unregistered"
    detail: str


def check_directory(directory: Path) -> list[Problem]:
    """Entries of ``directory`` whose module is missing, hand-edited or from an older generator/engine."""
    from .emit import GENERATOR_VERSION

    directory = Path(directory)
    registry = read_registry(directory)
    engine = engine_version()
    problems: list[Problem] = []
    for name, rec in sorted(registry["entries"].items()):
        path = directory / rec.get("file", f"{name}.py")
        digest = sha256_file(path)
        if digest is None:
            problems.append(Problem(name, "missing", f"{path.name} does not exist"))
            continue
        if digest != rec.get("sha256"):
            problems.append(Problem(name, "edited", f"{path.name} differs from the generated file (sha256)"))
            continue
        if rec.get("npz"):
            nd = sha256_file(directory / rec["npz"])
            if nd is None:
                problems.append(Problem(name, "missing", f"{rec['npz']} does not exist"))
                continue
            if nd != rec.get("npz_sha256"):
                problems.append(Problem(name, "edited", f"{rec['npz']} differs from the generated table"))
                continue
        if rec.get("generator_version") != GENERATOR_VERSION:
            problems.append(
                Problem(
                    name,
                    "stale",
                    f"generated by dualact.codegen {rec.get('generator_version')}, "
                    f"current is {GENERATOR_VERSION}",
                )
            )
            continue
        if engine is not None and rec.get("engine_version") not in (None, engine):
            problems.append(
                Problem(name, "stale", f"derived by engine {rec.get('engine_version')}, current is {engine}")
            )
    known = {rec.get("file", f"{n}.py") for n, rec in registry["entries"].items()}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") or path.name in known:
            continue
        problems.append(Problem(path.stem, "unregistered", f"{path.name} is not in {REGISTRY_NAME}"))
    return problems


# ---------------------------------------------------------------------------------------------------------
# add and regenerate


def _derive(source: str, params: dict[str, Any] | None, name: str, use_cache: bool = True):
    from dualact.symbolic.derive import derive

    return derive(source, params or None, name=name, use_cache=use_cache)


def add_entry(
    name: str,
    source: str,
    params: dict[str, Any] | None = None,
    *,
    force: bool = False,
    directory: Path | None = None,
    derivation=None,
) -> tuple[Path, dict[str, Any]]:
    """Derive ``source``, generate its module and register it as ``name``.

    Nothing is written unless derivation and emission both succeed; without ``force`` an existing name (in
    the target directory or anywhere on the catalog path) is an error. Returns ``(directory, record)``.
    """
    from dualact.errors import CatalogError

    from .emit import check_name, emit

    check_name(name)
    directory = Path(directory) if directory is not None else default_target_dir()
    if not force:
        existing = find_entry(name)
        in_target = name in read_registry(directory)["entries"] if directory.exists() else False
        if existing is not None or in_target:
            where = existing.directory if existing is not None else directory
            raise CatalogError(f"catalog entry {name!r} already exists in {where}; use --force to replace it")
    if derivation is None:
        derivation = _derive(source, params, name)
    emitted = emit(derivation, name)
    registry = write_entries(directory, [(name, derivation, emitted)], origin="user")
    return directory, registry["entries"][name]


def _regenerate_one(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: re-emit (and optionally re-derive) one entry. Plain data in and out (process pools)."""
    from dualact.symbolic.derivation import Derivation

    from .emit import emit

    name = task["name"]
    try:
        if task["rederive"]:
            from . import entries

            entry = entries.by_name(name)
            if entry is not None:
                derivation = entry.derive(use_cache=False)
            else:
                derivation = _derive(task["source"], task["params"], name, use_cache=False)
            npz = None
        else:
            derivation = Derivation.from_json_dict(task["derivation"])
            npz = task.get("npz")
        emitted = emit(derivation, name, npz=npz)
    except Exception as exc:  # noqa: BLE001 - reported per entry
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "name": name,
        "derivation": derivation.to_json_dict(),
        "kind": emitted.kind,
        "source": emitted.source,
        "npz": emitted.npz,
    }


def regenerate(
    directory: Path,
    *,
    names: list[str] | None = None,
    rederive: bool = False,
    jobs: int = 1,
    progress=None,
) -> tuple[list[str], dict[str, str]]:
    """Rebuild the modules of ``directory`` from their recorded derivations (or re-derive them).

    With ``rederive`` in the built-in catalog, every entry of :mod:`dualact.codegen.entries` is (re)built.
    ``progress(name)`` is called after each entry. Returns ``(written names, {name: error})``; entries that
    fail are left untouched.
    """
    from dualact.symbolic.derivation import Derivation

    from . import entries
    from .emit import EmittedModule

    directory = Path(directory)
    registry = read_registry(directory)
    recs = registry["entries"]
    todo = list(recs)
    if rederive and directory.resolve() == builtin_catalog_dir():
        todo = sorted(set(todo) | set(entries.names()))
    if names:
        unknown = [n for n in names if n not in todo]
        if unknown:
            from dualact.errors import CatalogError

            raise CatalogError(f"no catalog entry named {', '.join(map(repr, unknown))} in {directory}")
        todo = [n for n in todo if n in names]
    tasks = []
    for name in todo:
        rec = recs.get(name, {})
        npz = None
        if rec.get("npz") and not rederive:
            try:
                npz = (directory / rec["npz"]).read_bytes()
            except OSError:
                npz = None
        tasks.append(
            {
                "name": name,
                "rederive": rederive or "derivation" not in rec,
                "derivation": rec.get("derivation"),
                "source": rec.get("source"),
                "params": rec.get("params"),
                "npz": npz,
            }
        )
    results = []
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_regenerate_one, t) for t in tasks]
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                if progress:
                    progress(res["name"])
    else:
        for t in tasks:
            res = _regenerate_one(t)
            results.append(res)
            if progress:
                progress(res["name"])
    errors = {r["name"]: r["error"] for r in results if "error" in r}
    items = []
    for r in sorted((r for r in results if "error" not in r), key=lambda r: r["name"]):
        derivation = Derivation.from_json_dict(r["derivation"])
        emitted = EmittedModule(name=r["name"], kind=r["kind"], source=r["source"], npz=r["npz"])
        items.append((r["name"], derivation, emitted))
    if items:
        origin = "builtin" if directory.resolve() == builtin_catalog_dir() else "user"
        write_entries(directory, items, origin=origin, rederived=rederive)
    return [n for n, _, _ in items], errors
