"""A TCP fault proxy: latency, resets and stalls between a client and its upstream server.

`FaultProxy` listens on a free 127.0.0.1 port and forwards each connection to an upstream
host:port. It runs an asyncio event loop of its own in a daemon thread, so the fault harness
and tests drive it from ordinary threads; every public method takes effect before it returns.
Faults switch at runtime and can overlap:

- `latency(delay_ms=..., jitter_ms=...)`: each chunk read waits `delay + uniform(0, jitter)`
  before it is written on, in both directions; bytes and their order are unchanged.
- `reset(refuse_s=...)`: every live connection is closed with an RST on both sides (SO_LINGER
  0: no FIN, unsent data dropped), as a crashed middlebox or a peer's kernel would; for
  `refuse_s` afterwards, new connections are reset as soon as they are accepted.
- `stall(duration_s=...)`: nothing is read or written in either direction, but no connection is
  closed, as in a network partition; new connections are accepted and held too. `release()` (or
  the end of the duration) lets the held bytes through.

`clear()` ends every fault. `stats()` counts connections, chunks and the faults injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
CHUNK_BYTES_MAX = 65536
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 10.0
# SO_LINGER on, zero seconds: close() sends RST at once instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class ProxyStats:
    """What a proxy has seen and done so far."""

    connections: int = 0  # accepted and forwarded to the upstream
    live: int = 0  # open right now
    refused: int = 0  # reset on accept while refusing, or when the upstream was unreachable
    chunks: int = 0  # forwarded, both directions
    bytes: int = 0  # forwarded, both directions
    delayed_chunks: int = 0  # forwarded after an added latency
    held_chunks: int = 0  # read, then held back by a stall before being forwarded
    latency_bursts: int = 0
    resets: int = 0
    reset_connections: int = 0  # live connections cut by those resets
    stalls: int = 0


class _Connection:
    """One proxied connection: the client's side and the upstream's side."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.was_reset = False

    def reset(self) -> None:
        """Closes both sides with an RST."""
        self.was_reset = True
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`, with switchable faults."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        name: str,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self._rng = rng or random.Random()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Set while bytes may flow; cleared by a stall. Only touched on the loop's thread.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay_s = 0.0
        self._jitter_s = 0.0
        self._refuse_until = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._counts: dict[str, int] = dict.fromkeys(ProxyStats.__dataclass_fields__, 0)
        self.port = 0

    # --- control, from any thread ---------------------------------------------------------

    def start(self) -> FaultProxy:
        """Starts listening on a free port (then `port` is set); returns itself."""
        self._thread.start()
        self._server = self._call(
            lambda: asyncio.start_server(self._serve, LOCALHOST, 0, reuse_address=True)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stops listening, resets what is still open and ends the loop's thread."""
        if self._server is not None:

            async def shut() -> None:
                assert self._server is not None
                self._server.close()
                self._flowing.set()  # tasks held by a stall must see their connection end
                for connection in list(self._connections):
                    connection.reset()
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=CONTROL_TIMEOUT_S)

            self._call(shut)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONTROL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultProxy]:
        """Runs the proxy for the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def latency(
        self, *, delay_ms: float, jitter_ms: float = 0.0, duration_s: float | None = None
    ) -> None:
        """Delays every chunk by `delay_ms` plus up to `jitter_ms`; for `duration_s` if given."""
        assert delay_ms >= 0 and jitter_ms >= 0, (delay_ms, jitter_ms)

        async def apply() -> None:
            self._delay_s, self._jitter_s = delay_ms / 1000, jitter_ms / 1000
            if delay_ms or jitter_ms:
                self._counts["latency_bursts"] += 1
            self._schedule("latency", duration_s, self._end_latency)

        self._call(apply)

    def reset(self, *, refuse_s: float = 0.0) -> int:
        """RSTs every live connection, then resets new ones for `refuse_s`; returns how many."""
        assert refuse_s >= 0, refuse_s

        async def apply() -> int:
            live = list(self._connections)
            for connection in live:
                connection.reset()
                # Gone now, though its task may only notice once a stall ends.
                self._connections.discard(connection)
            self._refuse_until = time.monotonic() + refuse_s
            self._counts["resets"] += 1
            self._counts["reset_connections"] += len(live)
            return len(live)

        return self._call(apply)

    def stall(self, *, duration_s: float | None = None) -> None:
        """Holds every byte in both directions until `release()`, or for `duration_s`."""

        async def apply() -> None:
            self._flowing.clear()
            self._counts["stalls"] += 1
            self._schedule("stall", duration_s, self._flowing.set)

        self._call(apply)

    def release(self) -> None:
        """Ends a stall: the held bytes flow again."""

        async def apply() -> None:
            self._cancel_timer("stall")
            self._flowing.set()

        self._call(apply)

    def clear(self) -> None:
        """Ends every fault: no latency, no stall, no refusing."""

        async def apply() -> None:
            for name in list(self._timers):
                self._cancel_timer(name)
            self._end_latency()
            self._flowing.set()
            self._refuse_until = 0.0

        self._call(apply)

    def stats(self) -> ProxyStats:
        """The counts so far."""

        async def read() -> ProxyStats:
            return ProxyStats(**{**self._counts, "live": len(self._connections)})

        return self._call(read)

    # --- the loop's side --------------------------------------------------------------------

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(CONTROL_TIMEOUT_S)

    def _schedule(self, name: str, duration_s: float | None, end: Callable[[], None]) -> None:
        self._cancel_timer(name)
        if duration_s is not None:

            def fire() -> None:
                self._timers.pop(name, None)
                end()

            self._timers[name] = self._loop.call_later(duration_s, fire)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _end_latency(self) -> None:
        self._delay_s = self._jitter_s = 0.0

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if time.monotonic() < self._refuse_until:
            self._counts["refused"] += 1
            _abort_with_rst(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), UPSTREAM_CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            # As a down server would look to the client, as closely as an accepted socket can.
            self._counts["refused"] += 1
            _abort_with_rst(client_writer)
            return
        connection = _Connection(client_writer, upstream_writer)
        self._connections.add(connection)
        self._counts["connections"] += 1
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, connection),
                self._pump(upstream_reader, client_writer, connection),
            )
        finally:
            self._connections.discard(connection)
            if not connection.was_reset:
                client_writer.close()
                upstream_writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        """Copies one direction until end of stream; an error on either side resets both."""
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK_BYTES_MAX)
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()  # half-close, as the peer did
                    return
                delay_s = self._delay_s + self._rng.uniform(0.0, self._jitter_s)
                if delay_s > 0:
                    self._counts["delayed_chunks"] += 1
                    await asyncio.sleep(delay_s)
                if not self._flowing.is_set():
                    # A stall that began while this chunk was read or delayed holds it too.
                    self._counts["held_chunks"] += 1
                    await self._flowing.wait()
                if connection.was_reset:
                    return
                writer.write(data)
                await writer.drain()
                self._counts["chunks"] += 1
                self._counts["bytes"] += len(data)
        except (OSError, RuntimeError):
            # A peer reset, or a transport already aborted: the other side learns it by an RST.
            if not connection.was_reset:
                connection.reset()
