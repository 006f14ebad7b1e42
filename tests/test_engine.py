"""
The storage-engine seam (kaf.engine): the file engine provides it. That the
HTTP layer, the stats and the metrics import the seam and never an engine's
modules, so that another engine can stand behind them, tests/test_layout.py
checks.
"""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from conftest import sync_runner
from kaf.engine import EMPTY, IEngine, ILog, IPieces, Summary
from kaf.engines.file.logfile import Pieces
from kaf.engines.file.store import Store


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
