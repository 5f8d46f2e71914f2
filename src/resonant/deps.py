"""The source files a stage depends on, found from its imports.

Snakemake sees only the files listed among a rule's inputs, so each stage
lists its script and every module of this package the script imports,
directly or through other modules (function-level imports included). The
list is computed from the code itself and cannot go stale.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "resonant"
SRC = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The file of a dotted module name inside the package, or None if outside it."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = SRC.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules that ``path`` imports (``from a import b`` gives a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = _module_name(path).split(".") if path.is_relative_to(SRC) else []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


@lru_cache(maxsize=None)
def _closure(path: Path) -> frozenset[Path]:
    seen: set[Path] = set()
    todo = [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in _imports(f):
            parts = name.split(".")
            # a module also loads every package __init__ above it
            for i in range(1, len(parts) + 1):
                mf = _module_file(".".join(parts[:i]))
                if mf is not None and mf not in seen:
                    todo.append(mf)
    return frozenset(seen)


def sources(script, root=None) -> list[str]:
    """The script and the package files it depends on, as paths relative to ``root``."""
    root = Path(root or SRC.parents[1]).resolve()
    files = _closure(Path(script).resolve())
    return sorted(str(f.relative_to(root)) for f in files)
