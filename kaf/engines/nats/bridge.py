"""
The NATS client (nats-py) runs on asyncio, Kaf on the Twisted reactor.

With Twisted's asyncio reactor (what C{twistd kaf --store nats://} runs
on, unless C{-r} names another) the bridge uses the reactor's own loop:
coroutines become Deferreds with C{Deferred.fromFuture}, no thread, no
hop.  Under any other reactor (the tests' default one, C{-r epoll}) it
runs an asyncio loop in a thread of its own, and results come back to the
reactor thread with C{callFromThread}.  The shared loop took 1.7 times the
puts (64 connections, R1) of the loop in a thread, whose two threads
contend for the GIL (README.rst, Scaling out); the data-folder engine
keeps the epoll reactor either way.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Bridge:
    """An asyncio loop in a thread, and the way from the reactor into it and back."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        shared = getattr(reactor, "_asyncioEventloop", None)
        #: True when the reactor runs on this loop (the asyncio reactor).
        self.shared = shared is not None
        self.loop = shared if shared is not None else asyncio.new_event_loop()
        self._thread: Optional[threading.Thread] = None

    def describe(self) -> str:
        return "the reactor's asyncio loop" if self.shared else "an asyncio loop in a thread"

    def start(self) -> None:
        if self._thread is None and not self.shared:
            self._thread = threading.Thread(target=self._run, name="kaf-nats", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, make: Callable[[], Awaitable[Any]]) -> "Deferred[Any]":
        """
        A Deferred of the result of the coroutine C{make()} run on the loop:
        fired (or failed) in the reactor thread.
        """
        if self.shared:
            return Deferred.fromFuture(asyncio.ensure_future(make(), loop=self.loop))
        d: "Deferred[Any]" = Deferred()
        reactor = self._reactor

        def done(task: "asyncio.Future[Any]") -> None:
            if task.cancelled():
                reactor.callFromThread(d.errback, Failure(asyncio.CancelledError()))
                return
            error = task.exception()
            if error is not None:
                reactor.callFromThread(d.errback, Failure(error))
            else:
                reactor.callFromThread(d.callback, task.result())

        def begin() -> None:
            try:
                task = asyncio.ensure_future(make())
            except BaseException as e:  # noqa: B902 - any failure reaches the caller
                reactor.callFromThread(d.errback, Failure(e))
                return
            task.add_done_callback(done)

        self.loop.call_soon_threadsafe(begin)
        return d

    def wait(self, make: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        """Run C{make()} on the loop and block this thread for its result (start-up only)."""
        if self.shared:
            # Before the reactor runs: the loop is ours to run until done.
            return self.loop.run_until_complete(asyncio.wait_for(make(), timeout))
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            loop = self.loop

            def cancel_and_stop() -> None:
                # What is still under way ends here (its callers were
                # answered, or the process is stopping).
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in tasks:
                    t.cancel()
                if tasks:
                    gathered = asyncio.gather(*tasks, return_exceptions=True)
                    gathered.add_done_callback(lambda _: loop.stop())
                else:
                    loop.stop()

            loop.call_soon_threadsafe(cancel_and_stop)
            self._thread.join(5)
            self._thread = None
