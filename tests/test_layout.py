"""
The package layout shows the storage-engine seam, and the imports keep to
it: web -> engine interface <- engines.

  - kaf/api/ (the HTTP layer) imports nothing of kaf.engines;
  - kaf/engines/ (the storage engines) import nothing of kaf.api, and no
    engine imports another;
  - kaf/engine.py (the seam), kaf/errors.py, kaf/_format.py and
    kaf/_replies.py import neither (nor does kaf/dispatch.py, the reactor's
    event dispatch), and kaf/stats.py speaks only to the seam;
  - kaf/tap.py is the wiring and imports both.

Each module under kaf/ is parsed, not imported: an import inside a
function or under C{if TYPE_CHECKING:} counts too.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAF = os.path.join(REPO, "kaf")

API = "kaf.api"
ENGINES = "kaf.engines"

#: Each engine's package, which imports no other engine's.
ENGINE_PACKAGES = sorted(
    "%s.%s" % (ENGINES, name) for name in os.listdir(os.path.join(KAF, "engines"))
    if os.path.isfile(os.path.join(KAF, "engines", name, "__init__.py")))

#: (modules, what they must not import): by dotted prefix.
RULES = [
    (API, ENGINES),
    (ENGINES, API),
] + [(one, other) for one in ENGINE_PACKAGES for other in ENGINE_PACKAGES if one != other] + [
    ("kaf.engine", ENGINES), ("kaf.engine", API),
    ("kaf.errors", ENGINES), ("kaf.errors", API),
    ("kaf._format", ENGINES), ("kaf._format", API),
    ("kaf._replies", ENGINES), ("kaf._replies", API),
    ("kaf.stats", ENGINES), ("kaf.stats", API),
    ("kaf.dispatch", ENGINES), ("kaf.dispatch", API),
]


def modules() -> List[Tuple[str, str]]:
    """Each module under kaf/ as (dotted name, path)."""
    found = []
    for folder, dirs, files in os.walk(KAF):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found.append((".".join(parts), path))
    return found


def imported(module: str, source: str, filename: str = "<source>") -> Iterator[Tuple[int, str]]:
    """
    (line, dotted name) of each import in C{source}, the code of
    C{module}: C{from a.b import c} names both C{a.b} and C{a.b.c}, since
    C{c} may be a module; relative imports are made absolute.
    """
    package = module.split(".")
    if not filename.endswith("__init__.py"):
        package.pop()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:
                yield node.lineno, "%s.%s" % (name, alias.name)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def wrong_way(module: str, source: str, filename: str = "<source>") -> List[str]:
    """The imports of C{module} that run against the seam, as messages."""
    where = os.path.relpath(filename, REPO) if os.path.isabs(filename) else filename
    # (line, rule) -> the shortest offending name on that line
    first: Dict[Tuple[int, Tuple[str, str]], str] = {}
    for line, name in imported(module, source, filename):
        for rule in RULES:
            if within(module, rule[0]) and within(name, rule[1]):
                if (line, rule) not in first or len(name) < len(first[line, rule]):
                    first[line, rule] = name
    return ["%s:%d: %s imports %s (%s must not import %s)"
            % (where, line, module, name, rule[0], rule[1])
            for (line, rule), name in sorted(first.items())]


MODULES = modules()


def test_the_layout_has_the_http_layer_the_seam_and_the_file_engine() -> None:
    names = {name for name, _ in MODULES}
    assert {"kaf.engine", "kaf.api", "kaf.api.web", "kaf.api.http", "kaf.engines",
            "kaf.engines.file", "kaf.engines.file.store", "kaf.engines.file.log",
            "kaf.engines.nats", "kaf.engines.nats.engine", "kaf.tap", "kaf.stats"} <= names
    # The HTTP layer and the file engine are in their packages, none left flat.
    flat = {name for name in names if name.count(".") == 1}
    assert not flat & {"kaf.web", "kaf.http", "kaf.sse", "kaf.store", "kaf.log", "kaf.logfile"}


@pytest.mark.parametrize("module,path", MODULES, ids=[name for name, _ in MODULES])
def test_imports_run_one_way(module: str, path: str) -> None:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    problems = wrong_way(module, source, path)
    assert not problems, "\n".join(problems)


def test_the_wiring_imports_both_sides() -> None:
    # kaf/tap.py puts an engine behind the HTTP layer: the one module that may.
    with open(os.path.join(KAF, "tap.py"), encoding="utf-8") as f:
        names = {name for _, name in imported("kaf.tap", f.read())}
    assert any(within(name, API) for name in names)
    assert any(within(name, ENGINES) for name in names)


@pytest.mark.parametrize("module,source,offending", [
    ("kaf.api.web", "from kaf.engines.file.store import Store\n", "kaf.engines.file.store"),
    ("kaf.api.web", "import kaf.engines.file.log\n", "kaf.engines.file.log"),
    ("kaf.api.web", "from kaf.engines.file import msgids\n", "kaf.engines.file"),
    ("kaf.api.web", "def f():\n    from kaf import engines\n", "kaf.engines"),
    ("kaf.api.web", "from ..engines.file import log\n", "kaf.engines.file"),
    ("kaf.engines.file.log", "from kaf.api.metrics import Metrics\n", "kaf.api.metrics"),
    ("kaf.engines.file.log", "from ...api import sse\n", "kaf.api"),
    ("kaf.engines.nats.engine", "from kaf.engines.file.log import Log\n", "kaf.engines.file.log"),
    ("kaf.engines.file.store", "from ..nats import names\n", "kaf.engines.nats"),
    ("kaf.engine", "from kaf.engines.file.store import Store\n", "kaf.engines.file.store"),
    ("kaf.stats", "from kaf.api.metrics import Metrics\n", "kaf.api.metrics"),
])
def test_a_wrong_way_import_is_named(module: str, source: str, offending: str) -> None:
    problems = wrong_way(module, source)
    assert any(" imports %s (" % (offending,) in p for p in problems), problems
    assert all(p.startswith("<source>:") for p in problems), problems


@pytest.mark.parametrize("module,source", [
    ("kaf.api.web", "from kaf.engine import IEngine\nfrom kaf.errors import KafError\n"),
    ("kaf.api.web", "from kaf import _format, engine\nfrom . import sse\n"),
    ("kaf.engines.file.store", "from kaf.engine import IEngine\nfrom . import logfile\n"),
    ("kaf.engines.file.log", "from kaf.engines.file.logfile import LogFile\n"),
    ("kaf.tap", "from kaf.api.web import KafWeb\nfrom kaf.engines.file.store import Store\n"),
    # kaf.engine is the seam, not a module of kaf.engines
    ("kaf.api.web", "import kaf.engine\n"),
])
def test_an_import_along_the_seam_passes(module: str, source: str) -> None:
    assert wrong_way(module, source) == []
