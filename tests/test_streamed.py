"""
Large kaf replies are read from the file a piece at a time, as the
client's socket drains: a client that does not read holds one piece.
"""
from __future__ import annotations

import os
from typing import Any, List

from twisted.internet.task import Clock

from conftest import fired, sync_runner
from kaf import _format
from kaf.api import streamed
from kaf.engines.file.log import PIECES_BYTES, Log
from kaf.engines.file.logfile import Pieces
from kaf.engines.file.store import Store
from test_sse import Connection, Server, SmallSocket, dechunk

MESSAGES = [b"%04d" % (i,) + b"m" * 996 for i in range(1, 301)]


def big_log(folder: str, name: str = "big") -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(_format.db_header(0) + _format.records(1, MESSAGES))


def store_of(folder: str) -> Store:
    store = Store(folder, Clock(), sync_runner, fsync=False)
    store.load()
    return store


def read_all(pieces: Pieces, size: int = 4096) -> bytes:
    out: List[bytes] = []
    while not pieces.done:
        out.append(pieces.read(size))
    pieces.close()
    return b"".join(out)


def test_a_large_reply_comes_as_pieces_holding_the_same_records(tmp_path: Any) -> None:
    folder = str(tmp_path)
    big_log(folder)
    store = store_of(folder)
    log = store.get("big")
    assert isinstance(log, Log)
    whole = fired(log.get(1, 1000, 1 << 20))
    reply = fired(log.get(1, 1000, 1 << 20, pieces=True))
    assert whole.pieces is None and reply.pieces is not None
    assert reply.slice.span == b"" and list(reply.slice.nums) == list(range(1, 301))
    assert reply.pieces.length == len(whole.slice.kaf_records()) > PIECES_BYTES
    assert read_all(reply.pieces) == whole.slice.kaf_records()
    fired(store.close())


def test_a_small_reply_or_a_hand_edited_one_is_read_at_once(tmp_path: Any) -> None:
    folder = str(tmp_path)
    big_log(folder)
    with open(os.path.join(folder, "edited"), "wb") as f:
        # Blank lines between records: the reply is re-encoded, not copied.
        f.write(_format.db_header(0) + b"\n\n".join(
            _format.records(n, [m]) for n, m in enumerate(MESSAGES, 1)))
    store = store_of(folder)
    small = fired(store.get("big").get(1, 10, 1 << 20, pieces=True))
    assert small.pieces is None and small.slice.messages() == MESSAGES[:10]
    edited = fired(store.get("edited").get(1, 1000, 1 << 20, pieces=True))
    assert edited.pieces is None
    assert edited.slice.kaf_records() == _format.records(1, MESSAGES)
    fired(store.close())


def test_pieces_read_the_messages_of_their_reply_after_an_archive(tmp_path: Any) -> None:
    folder = str(tmp_path)
    big_log(folder)
    store = store_of(folder)
    log = store.get("big")
    assert log is not None
    expected = fired(log.get(1, 1000, 1 << 20)).slice.kaf_records()
    reply = fired(log.get(1, 1000, 1 << 20, pieces=True))
    fired(log.archive(299))
    fired(log.put([b"after"]))
    assert read_all(reply.pieces) == expected
    fired(store.close())


def test_a_large_get_is_read_from_the_file_only_as_the_socket_drains(tmp_path: Any) -> None:
    folder = str(tmp_path / "data")
    big_log(folder)
    server = Server(folder, Clock())
    socket = SmallSocket(limit=1000)
    c = Connection(server.site, socket)
    c.send(b"GET /get/big?from=1 HTTP/1.1\r\nHost: kaf\r\n\r\n")
    # The transport paused the reply at its first piece.
    assert len(socket.value()) < 1000 + streamed.PIECE + 1000
    got = socket.drain()
    rounds = 1
    while socket.full:
        got += socket.drain()
        rounds += 1
    got += socket.value()
    assert rounds >= 4
    head, _, body = got.partition(b"\r\n\r\n")
    expected = _format.reply_header(300) + _format.records(1, MESSAGES)
    assert b"\r\nContent-Length: %d\r\n" % (len(expected),) in head + b"\r\n"
    assert b"\r\nX-Kaf-LastMsgSent: 300\r\n" in head
    assert body == expected
    c.close()
    fired(server.store.close())


def test_a_client_that_goes_away_mid_reply_leaves_no_descriptor_open(tmp_path: Any) -> None:
    folder = str(tmp_path / "data")
    big_log(folder)
    server = Server(folder, Clock())
    server.store.get("big").get(1, 1, 100)
    before = len(os.listdir("/proc/self/fd"))
    c = Connection(server.site, SmallSocket(limit=1000))
    c.send(b"GET /get/big?from=1 HTTP/1.1\r\nHost: kaf\r\n\r\n")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    c.close()
    assert len(os.listdir("/proc/self/fd")) == before
    fired(server.store.close())
