"""The package's shape: who may import whom, how big a module may grow, where imports may sit.

Everything here reads `firedrill/**/*.py` with `ast`; nothing imports the package, so a broken or
slow-to-import module still gets a precise message instead of an ImportError.

What counts as an import: every `import` / `from ... import` statement anywhere in a module, including
the ones under `if TYPE_CHECKING:` and inside functions. Relative imports are resolved against the
module's package, and `from pkg import name` where `name` is a submodule of `pkg` counts as importing
that submodule (otherwise it counts as importing `pkg` itself).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "firedrill"
PACKAGE_DIR = ROOT / PACKAGE

MAX_LINES = 600

# The layers, bottom (ground floor) to top: (name, members). A module may import only from its own
# layer or from the layers below it. A member is a module or a package (a package covers all its
# submodules); a module belongs to the longest member that is a prefix of its dotted name.
#
# Where the map departs from "adapters, then the after-run": the run context sits on its own floor,
# above the targets (its environment record describes a target) and below publish (whose ledger and
# output locations are the run context's defaults), so neither may reach for the other's side.
LAYERS: list[tuple[str, list[str]]] = [
    (
        # shared types and pure logic, no I/O except the probes
        "ground",
        [
            "firedrill",  # the package's own __init__
            "firedrill.errors",
            "firedrill.timeline",
            "firedrill.evidence",
            "firedrill.config",
            "firedrill.measure",
            "firedrill.measure_ha",  # the HA manager's failover phases, pure
            "firedrill.object_versions",  # S3 version selection, restore plan, verification; pure
            "firedrill.config_ha",  # profile sections of HA-managed PostgreSQL
            "firedrill.config_sentinel",  # profile section of an existing Redis Sentinel deployment
            "firedrill.probes",
            "firedrill.catalogue",
            "firedrill.manifest",
            "firedrill.evidence_load",
            "firedrill.config_knobs",
            "firedrill.load.accounting",  # pure: the load's loss, windows and phases
            "firedrill.load.generator",  # threads only, like the probes
            "firedrill.config_zones",  # profile section of the zone outage drill (local zones, AWS FIS)
            "firedrill.evidence_zones",  # the zone drill's evidence: layout, cuts, per-resource table, FIS
            "firedrill.measure_zones",  # pure: RTO and loss per resource, split brain by seq
        ],
    ),
    (
        # AWS plumbing, fault injection, staging, the audit trail, rendering reports from evidence
        "platform",
        [
            "firedrill.aws",
            "firedrill.faults",
            "firedrill.staging",
            "firedrill.audit",
            "firedrill.report",
            "firedrill.load",  # the load's store clients (psycopg, redis-py)
        ],
    ),
    ("targets", ["firedrill.targets"]),  # the adapters a drill drives, and the registry picking them
    ("run context", ["firedrill.run_context"]),  # who runs a drill, where, where its evidence goes
    ("publish", ["firedrill.publish"]),  # after a run: ledger append, report, webhook, metrics
    ("drills", ["firedrill.drills"]),  # procedures, plan, calibration
    ("steps", ["firedrill.steps"]),  # the pytest-bdd step library
    ("entry points", ["firedrill.plugin", "firedrill.runner", "firedrill.schedule"]),
    ("command line", ["firedrill.cli"]),
]

# Third-party packages a function may import late: optional (not in [project] dependencies) and heavy.
# Everything else, the standard library and firedrill's own modules above all, is imported at the top.
LATE_IMPORT_ALLOWED = frozenset({"moto"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    path: str  # its file, relative to the repository root
    line: int
    target: str  # the module imported, fully qualified and resolved
    function: str | None  # the enclosing function's name, None at module (or class) level
    type_checking: bool

    @property
    def in_function(self) -> bool:
        return self.function is not None

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


MODULE_FILES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
PACKAGES: frozenset[str] = frozenset(_module_name(p) for p in PACKAGE_DIR.rglob("__init__.py"))


def _is_type_checking_test(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, function: str | None = None, type_checking: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None, bool]]:
    """Every import statement under `node`, with its enclosing function and whether it is under
    `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, function, type_checking
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(child, child.name, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking_test(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), function, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), function, type_checking)
        else:
            yield from _walk(child, function, type_checking)


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if module in PACKAGES else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def _imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node, function, type_checking in _walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve_from(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULE_FILES else base)
        for target in dict.fromkeys(targets):
            found.append(Import(module, _rel(path), node.lineno, target, function, type_checking))
    return found


IMPORTS: list[Import] = [imp for mod, path in MODULE_FILES.items() for imp in _imports_of(mod, path)]


def _internal(target: str) -> str | None:
    """The firedrill module `target` names (the deepest existing one), or None for third-party."""
    if target != PACKAGE and not target.startswith(PACKAGE + "."):
        return None
    while target not in MODULE_FILES and "." in target:
        target = target.rpartition(".")[0]
    return target


INTERNAL: list[tuple[Import, str]] = [
    (imp, resolved) for imp in IMPORTS if (resolved := _internal(imp.target)) is not None
]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (or a self-loop), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})

    def visit(start: str) -> None:
        # Iterative Tarjan, so a deep graph cannot hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return sorted(found)


def _describe_cycles(cycles: list[list[str]], edge_sites: dict[tuple[str, str], list[Import]]) -> str:
    lines: list[str] = []
    for component in cycles:
        members = set(component)
        lines.append(f"cycle among {', '.join(component)}:")
        for (src, dst), sites in sorted(edge_sites.items()):
            if src in members and dst in members:
                for imp in sites:
                    how = " (under TYPE_CHECKING)" if imp.type_checking else ""
                    how += f" (inside {imp.function}())" if imp.in_function else ""
                    lines.append(f"  {imp.where()} {imp.module} -> {imp.target}{how}")
    return "\n".join(lines)


def _layer_of(module: str) -> int:
    best, best_len = -1, -1
    for number, (_, members) in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > best_len:
                best, best_len = number, len(member)
    return best


def _layer_name(number: int) -> str:
    return f"layer {number + 1}, {LAYERS[number][0]}"


def test_every_module_has_a_layer() -> None:
    missing = sorted(_rel(path) for mod, path in MODULE_FILES.items() if _layer_of(mod) < 0)
    assert not missing, "modules not placed in LAYERS (add them to the map):\n  " + "\n  ".join(missing)


def test_layers_do_not_overlap() -> None:
    entries = [member for _, members in LAYERS for member in members]
    assert len(entries) == len(set(entries)), "a LAYERS entry is listed twice"


def test_internal_imports_name_existing_modules() -> None:
    """An import of a firedrill module that is not there (left behind by a move or a split)."""
    stale = [
        f"{imp.where()} imports {imp.target}, which is no module of {PACKAGE}"
        for imp, _ in INTERNAL
        if imp.target not in MODULE_FILES
    ]
    assert not stale, "imports of missing firedrill modules:\n  " + "\n  ".join(stale)


def test_no_module_import_cycles() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    sites: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp, target in INTERNAL:
        if target != imp.module:
            edges[imp.module].add(target)
            sites[imp.module, target].append(imp)
    cycles = _cycles(edges)
    assert not cycles, "import cycles between modules:\n" + _describe_cycles(cycles, sites)


def _package_of(module: str) -> str:
    """`firedrill.targets.aws_rds` -> `firedrill.targets`; a top-level module is its own node."""
    return ".".join(module.split(".")[:2])


def test_no_package_import_cycles() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    sites: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp, target in INTERNAL:
        src, dst = _package_of(imp.module), _package_of(target)
        if src != dst:
            edges[src].add(dst)
            sites[src, dst].append(imp)
    cycles = _cycles(edges)
    assert not cycles, "import cycles between packages:\n" + _describe_cycles(cycles, sites)


def test_no_upward_imports() -> None:
    offences: list[str] = []
    for imp, target in INTERNAL:
        mine, theirs = _layer_of(imp.module), _layer_of(target)
        if theirs > mine >= 0:
            offences.append(
                f"{imp.where()} {imp.module} [{_layer_name(mine)}] "
                f"imports {imp.target} [{_layer_name(theirs)}]"
            )
    assert not offences, "imports from a higher layer:\n  " + "\n  ".join(offences)


def test_no_module_over_max_lines() -> None:
    too_long: list[str] = []
    for path in MODULE_FILES.values():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            too_long.append(f"{_rel(path)}: {count} lines")
    assert not too_long, f"modules over {MAX_LINES} lines (split them):\n  " + "\n  ".join(too_long)


def test_function_level_imports_only_of_optional_heavy_dependencies() -> None:
    offences: list[str] = []
    for imp in IMPORTS:
        if not imp.in_function:
            continue
        top = imp.target.split(".")[0]
        if top == PACKAGE:
            offences.append(
                f"{imp.where()} in {imp.function}(): {imp.target} (a firedrill module: never late)"
            )
        elif top not in LATE_IMPORT_ALLOWED:
            offences.append(f"{imp.where()} in {imp.function}(): {imp.target}")
    assert not offences, (
        "imports inside functions; move them to the top of the module (only these optional heavy "
        f"packages may be imported late: {', '.join(sorted(LATE_IMPORT_ALLOWED))}):\n  "
        + "\n  ".join(offences)
    )
