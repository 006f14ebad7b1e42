"""
The storage-engine seam (kaf.engine): the file engine provides it, and the
HTTP layer, the stats and the metrics import the seam, never the file
engine's modules, so another engine can stand behind them.
"""
from __future__ import annotations

import ast
import os
from typing import Any, Set

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from conftest import sync_runner
from kaf.engine import EMPTY, IEngine, ILog, IPieces, Summary
from kaf.engines.file.logfile import Pieces
from kaf.engines.file.store import Store

KAF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kaf")

#: The modules of the file engine.
FILE_ENGINE = {"kaf.engines.file.store", "kaf.engines.file.log", "kaf.engines.file.logfile",
               "kaf.engines.file.msgids", "kaf.engines.file.openfiles",
               "kaf.engines.file.retention", "kaf.engines.file.syncer",
               "kaf.engines.file._syncer"}
#: Those that speak to an engine only through kaf.engine.
THROUGH_THE_SEAM = ["api/web", "api/sse", "api/streamed", "stats", "api/metrics", "api/http",
                    "api/auth", "api/cors", "api/health", "api/console", "api/accesslog"]


def imports(module: str) -> Set[str]:
    with open(os.path.join(KAF, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update("%s.%s" % (node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("module", THROUGH_THE_SEAM)
def test_the_http_layer_stats_and_metrics_import_no_file_engine_module(module: str) -> None:
    assert not imports(module) & FILE_ENGINE


def test_the_seam_imports_no_engine() -> None:
    assert not imports("engine") & FILE_ENGINE


def test_the_file_engine_provides_the_seam(tmp_path: Any, clock: Clock) -> None:
    store = Store(str(tmp_path / "data"), clock, sync_runner, fsync=False)
    store.load()
    assert verifyObject(IEngine, store)
    log = store.get_or_create("orders")
    assert verifyObject(ILog, log)
    log.put([b"a", b"bc"])
    clock.advance(0)
    assert log.known
    assert log.summary() == Summary(1, 2, 2, len(b"KAF_DB|v1|0\nKAF_MSG|1|1\na\nKAF_MSG|2|2\nbc"),
                                    None)
    generation = log.generation
    log.archive(1)
    clock.advance(0)
    # An archive gives the log a new generation: cached reads are stale.
    assert log.generation is not generation
    store.close()


def test_pieces_of_a_large_reply_provide_the_seams_pieces(tmp_path: Any) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    fd = os.open(str(path), os.O_RDONLY)
    pieces = Pieces("log", fd, 2, 8)
    try:
        assert verifyObject(IPieces, pieces)
        assert pieces.read(4) == b"2345"
    finally:
        pieces.close()


def test_no_message_is_an_empty_slice() -> None:
    assert len(EMPTY) == 0 and EMPTY.messages() == [] and EMPTY.kaf_records() == b""
