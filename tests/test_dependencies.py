"""Dependencies by role: each process's extra of pyproject.toml holds what it imports.

The suite runs with every role installed, so a missing dependency would show only in a
role's own image. These tests read the imports instead: every module a process can load
(imports inside functions included), the distributions that provide them, and what the
role's extra brings with it by the installed distributions' own requirements.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from devstack.processes import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = set(PROJECT["tool"]["setuptools"]["packages"])
# Each role's processes: a package runs every module of it, a module itself.
PROCESSES = {
    "gateway": ["gateway"],
    "frames": ["frame_service"],
    "story": ["story_service", "translation_service", "llm.engine"],
}
# Imported only when asked for, with a message naming the extra that installs it.
OPTIONAL = {"llama_cpp": "inprocess"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_of(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_in(node: ast.AST) -> Iterator[str]:
    """Every module name the imports in ``node`` name, but those for type checkers only."""
    children: list[ast.AST] = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        children = list(node.orelse)
    elif isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        yield node.module
        # `from bus import tracing` imports the module bus.tracing.
        yield from (f"{node.module}.{alias.name}" for alias in node.names)
    for child in children:
        yield from imports_in(child)


def modules_of(start: str) -> list[str]:
    """A process's own modules: a module, or every module of a package."""
    path = source_of(start)
    if path is not None and path.name != "__init__.py":
        return [start]
    return [
        ".".join(file.relative_to(ROOT).with_suffix("").parts)
        for file in (ROOT / start).rglob("*.py")
    ]


@cache
def reach(role: str) -> tuple[frozenset[str], frozenset[str]]:
    """The project's modules the role's processes can load, and the other modules they
    import, each by its full name."""
    pending = [module for start in PROCESSES[role] for module in modules_of(start)]
    own: set[str] = set()
    outside: set[str] = set()
    while pending:
        module = pending.pop().removesuffix(".__init__")
        if module in own:
            continue
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]  # its packages
        path = source_of(module)
        if path is None:
            continue  # a name imported from a module, not a module
        own.add(module)
        for name in imports_in(ast.parse(path.read_text(encoding="utf-8"))):
            top = name.partition(".")[0]
            if top in FIRST_PARTY:
                pending.append(name)
            elif top not in sys.stdlib_module_names:
                outside.add(name)
    return frozenset(own), frozenset(outside)


@cache
def top_level_names() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


@cache
def provider(module: str) -> str | None:
    """The installed distribution whose files hold ``module``; None for a namespace
    several share (``opentelemetry``), which brings nothing by itself."""
    top = module.partition(".")[0]
    candidates = top_level_names().get(top, [])
    assert candidates, f"no installed distribution holds {module}"
    if len(set(candidates)) == 1:
        return normalized(candidates[0])
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for end in range(len(parts), 1, -1):
        prefix = "/".join(parts[:end])
        for name in candidates:
            files = metadata.distribution(name).files or []
            if any(str(file).startswith((f"{prefix}/", f"{prefix}.py")) for file in files):
                return normalized(name)
    raise AssertionError(f"no distribution holds {module}")


def requirements(extra: str | None) -> list[Requirement]:
    """The project's requirements for ``extra`` (None: the base), its own extras expanded."""
    listed = (
        PROJECT["project"]["dependencies"]
        if extra is None
        else PROJECT["project"]["optional-dependencies"][extra]
    )
    found: list[Requirement] = []
    for text in listed:
        requirement = Requirement(text)
        if normalized(requirement.name) == "imgstory":
            found += [r for inner in sorted(requirement.extras) for r in requirements(inner)]
        else:
            found.append(requirement)
    return found


@cache
def installed_with(extra: str) -> frozenset[str]:
    """Every distribution `pip install 'imgstory[extra]'` installs, by their metadata."""
    pending = requirements(None) + requirements(extra)
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = normalized(requirement.name)
        if name in found:
            continue
        found.add(name)
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            wanted = [{"extra": e} for e in ["", *sorted(requirement.extras)]]
            if needed.marker is None or any(needed.marker.evaluate(env) for env in wanted):
                pending.append(needed)
    return frozenset(found)


def test_each_role_installs_what_its_processes_import() -> None:
    for role in PROCESSES:
        installed = installed_with(role)
        missing = set()
        for module in reach(role)[1]:
            top = module.partition(".")[0]
            needed = provider(module)
            if top in OPTIONAL:
                assert needed in installed_with(OPTIONAL[top]), module
            elif needed is not None and needed not in installed:
                missing.add(f"{module} ({needed})")
        assert sorted(missing) == [], role


def test_the_gateway_installs_nothing_only_another_role_needs() -> None:
    own, _ = reach("gateway")
    # It loads the wire, the bus and itself: no frame service, no llm, no model files.
    assert {module.partition(".")[0] for module in own} == {"gateway", "bus", "contracts"}
    others = {
        normalized(r.name) for role in ("frames", "story", "inprocess") for r in requirements(role)
    }
    assert {"torch", "faster-whisper", "opencv-python-headless", "openai", "av"} <= others
    assert sorted(installed_with("gateway") & others) == []
