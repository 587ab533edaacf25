"""Per-directed-link TCP proxies (asyncio, on a background thread of the harness).

Node A reaches node B only through the proxies of the directed link A->B, and the raftlease
peer transport sends A->B messages only on A's own connections to B, so each link controls
exactly one direction of Raft traffic. A link has two listening ports, one per connection the
transport makes, both under the link's ONE state (mode, delay, drop) and counted in its stats
(``grpc`` and ``tcp`` apart):

  grpc  A's ``--peers`` entry for B -> B's listen port. A opens ``RaftPeer.Send`` here; B
        answers with the port of its plain-TCP peer link (raftlease/transport/tcp.py), and
        A's messages stay on this connection only if that link cannot be had.
  tcp   A's ``--peer-links`` entry for B -> B's TCP-link port (``--peer-listen``). A says
        hello here, then writes every later message as a frame. Without this entry A would
        connect to B's announced port directly and partitions would not cut it: the cluster
        checks at start-up that every link's ``tcp`` port carried the traffic
        (``Cluster.check_links``).

Both byte directions of each connection (A's messages; B's HTTP/2 acks and pings on the gRPC
one, B's hello answer on the TCP one) go through the link's proxy; cutting it cuts A->B
messages.

Link modes (set from any thread, effective at once, on both ports):
  pass       forward bytes (optionally delayed: delay_ms +- jitter_ms, order kept)
  blackhole  read and discard every byte, both ways. The connections stay up: gRPC keepalive
             notices after ~2 s; the TCP link notices nothing (its kernel-level keepalive and
             user timeout are answered by the proxy's socket, and B sends nothing on it), so
             it goes silent. Connections that lost bytes are closed on heal, as their framing
             is broken; A then sets the link up again (gRPC, then TCP)
  reset      close every connection now, and close new ones at once (connection refused-ish)
Plus ``drop``: probability per forwarded chunk to reset the connection (a lossy link: the
transport drops its queue on reconnect, so this loses messages). TCP cannot duplicate or
reorder messages; see NEEDS.md for the transport hook that would.

Members added at run time (row 18: ``serve --join`` + ``member add``) are reached by the old
members at the ONE peer address the configuration entry carries, and a running node cannot be
given a per-peer address book. For them the hub runs an inbound **demux** per new node: one
listening port (the address given to ``member add``) that asks, for every accepted connection,
which node process owns the connecting socket (``resolve(peer_port, local_port)``, psutil on
the node pids) and then handles it exactly as the directed link sender->new node, so that
link's mode/delay/drop apply and its counters grow. A connection from a process that is not
a node (a client following a leader hint) passes straight through. A new node takes no
plain-TCP links (``--peer-listen off``: the old members would dial its announced port, past
the demux), so links INTO it stay on gRPC, through the demux; its own links to the members
get a ``--peers`` and a ``--peer-links`` map of per-link proxies, like the original members,
and move to TCP. Such a run has both kinds of links at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jharness.util import now


@dataclass
class LinkState:
    mode: str = "pass"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: float = 0.0

    def describe(self) -> str:
        parts = [self.mode]
        if self.delay_ms:
            parts.append(f"delay={self.delay_ms:.0f}+-{self.jitter_ms:.0f}ms")
        if self.drop:
            parts.append(f"drop={self.drop:.2f}")
        return ",".join(parts)


# The connections a link proxies: the gRPC one (link set-up, or all of it if the TCP link
# cannot be had) and the plain-TCP peer link.
KINDS = ("grpc", "tcp")


class _Conn:
    def __init__(
        self, link: Link, kind: str, cr: asyncio.StreamReader, cw: asyncio.StreamWriter
    ) -> None:
        self.link = link
        self.kind = kind
        self.cr, self.cw = cr, cw
        self.ur: asyncio.StreamReader | None = None
        self.uw: asyncio.StreamWriter | None = None
        self.tainted = False
        self.closed = False
        self.tasks: list[asyncio.Task[Any]] = []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.uw):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        for t in self.tasks:
            t.cancel()
        self.link.conns.discard(self)


@dataclass
class Link:
    src: str
    dst: str
    port: int  # the gRPC connection: listening port -> dst's listen port
    target_port: int
    state: LinkState = field(default_factory=LinkState)
    conns: set[_Conn] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)
    bytes_fwd: int = 0
    bytes_dropped: int = 0
    resets: int = 0
    server: asyncio.base_events.Server | None = None
    # the plain-TCP peer link: listening port -> dst's TCP-link port (None: not proxied;
    # dst takes no TCP links)
    tcp_port: int | None = None
    tcp_target_port: int | None = None
    tcp_server: asyncio.base_events.Server | None = None
    # per kind ("grpc", "tcp"): connections accepted, bytes forwarded, bytes dropped
    accepted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    fwd_by: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    dropped_by: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"

    def target(self, kind: str) -> int | None:
        return self.tcp_target_port if kind == "tcp" else self.target_port


class ProxyHub:
    """Owns an event loop thread and every link proxy."""

    def __init__(self, seed: int) -> None:
        self.links: dict[tuple[str, str], Link] = {}
        # inbound demuxes of nodes added at run time: dst -> (port, passthrough link)
        self.demuxes: dict[str, tuple[int, Link]] = {}
        self.demux_hits: dict[str, int] = {}  # "src->dst" (or "?->dst": not a node) -> conns
        self._servers: list[asyncio.base_events.Server] = []
        self.rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="proxy-hub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- setup ------------------------------------------------------------------------------
    def add_link(
        self,
        src: str,
        dst: str,
        port: int,
        target_port: int,
        *,
        tcp_port: int | None = None,
        tcp_target_port: int | None = None,
    ) -> Link:
        """The directed link src->dst: its gRPC connection on ``port`` (to ``target_port``,
        dst's listen port) and, given both, its plain-TCP link on ``tcp_port`` (to
        ``tcp_target_port``, dst's ``--peer-listen`` port), under one state."""
        link = Link(src, dst, port, target_port, rng=random.Random(self.rng.random()))
        self.links[(src, dst)] = link
        self._call(self._start(link, "grpc", port))
        if tcp_port is not None and tcp_target_port is not None:
            self.add_tcp(src, dst, tcp_port, tcp_target_port)
        return link

    def add_tcp(self, src: str, dst: str, port: int, target_port: int) -> Link:
        """Proxy link src->dst's plain-TCP peer link too: ``port`` (src's ``--peer-links``
        entry for dst) -> ``target_port`` (dst's TCP-link port), same state as its gRPC one."""
        link = self.links[(src, dst)]
        if link.tcp_port is not None:
            raise ValueError(f"link {link.name} already proxies its TCP link on {link.tcp_port}")
        link.tcp_port, link.tcp_target_port = port, target_port
        self._call(self._start(link, "tcp", port))
        return link

    async def _start(self, link: Link, kind: str, port: int) -> None:
        async def on_conn(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            await self._handle(link, cr, cw, kind)

        server = await asyncio.start_server(on_conn, "127.0.0.1", port)
        if kind == "tcp":
            link.tcp_server = server
        else:
            link.server = server

    def add_demux(
        self, dst: str, port: int, target_port: int, resolve: Callable[[int, int], str | None]
    ) -> None:
        """Inbound demux for ``dst`` on ``port``: each connection is handled as the link
        (sender, dst) if ``resolve(peer_port, port)`` names a sender with such a link, else
        passed straight to ``target_port``."""
        through = Link("?", dst, port, target_port)
        self.demuxes[dst] = (port, through)
        self._call(self._start_demux(dst, port, through, resolve))

    async def _start_demux(
        self, dst: str, port: int, through: Link, resolve: Callable[[int, int], str | None]
    ) -> None:
        loop = asyncio.get_running_loop()

        async def on_conn(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            peer = cw.get_extra_info("peername")
            src = None
            with contextlib.suppress(Exception):
                src = await loop.run_in_executor(None, resolve, int(peer[1]), port)
            link = self.links.get((src, dst)) if src is not None else None
            key = f"{src if link is not None else '?'}->{dst}"
            self.demux_hits[key] = self.demux_hits.get(key, 0) + 1
            await self._handle(link or through, cr, cw)

        self._servers.append(await asyncio.start_server(on_conn, "127.0.0.1", port))

    async def _handle(
        self,
        link: Link,
        cr: asyncio.StreamReader,
        cw: asyncio.StreamWriter,
        kind: str = "grpc",
    ) -> None:
        conn = _Conn(link, kind, cr, cw)
        link.accepted[kind] += 1
        target = link.target(kind)
        if link.state.mode == "reset" or target is None:
            link.resets += 1
            conn.close()
            return
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", target), 2.0)
        except (OSError, TimeoutError):
            conn.close()
            return
        conn.ur, conn.uw = ur, uw
        link.conns.add(conn)
        if link.state.mode == "blackhole":
            conn.tainted = True
        conn.tasks = [
            asyncio.ensure_future(self._pump(conn, cr, uw)),
            asyncio.ensure_future(self._pump(conn, ur, cw)),
        ]

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link = conn.link
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        last_due = 0.0

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - now()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        dtask = asyncio.ensure_future(deliver())
        conn.tasks.append(dtask)
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                st = link.state
                if st.mode == "blackhole":
                    conn.tainted = True
                    link.bytes_dropped += len(data)
                    link.dropped_by[conn.kind] += len(data)
                    continue
                if st.mode == "reset":
                    break
                if st.drop and link.rng.random() < st.drop:
                    link.resets += 1
                    link.bytes_dropped += len(data)
                    link.dropped_by[conn.kind] += len(data)
                    break
                due = now()
                if st.delay_ms:
                    d = st.delay_ms + link.rng.uniform(-st.jitter_ms, st.jitter_ms)
                    due += max(0.0, d) / 1000.0
                last_due = max(last_due, due)  # TCP keeps order
                link.bytes_fwd += len(data)
                link.fwd_by[conn.kind] += len(data)
                queue.put_nowait((last_due, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # let queued bytes out, then close both sides
        with contextlib.suppress(Exception):
            for _ in range(100):
                if queue.empty():
                    break
                await asyncio.sleep(0.01)
        conn.close()

    # -- control (any thread) ---------------------------------------------------------------
    def set(self, src: str, dst: str, **kw: Any) -> None:
        link = self.links[(src, dst)]
        new = LinkState(**{**link.state.__dict__, **kw})
        self._call(self._apply(link, new))

    async def _apply(self, link: Link, new: LinkState) -> None:
        old = link.state
        link.state = new
        if new.mode == "reset":
            for c in list(link.conns):
                link.resets += 1
                c.close()
        elif new.mode == "pass" and old.mode != "pass":
            for c in list(link.conns):
                if c.tainted:
                    c.close()

    def heal_all(self) -> None:
        for src, dst in list(self.links):
            self.set(src, dst, mode="pass", delay_ms=0.0, jitter_ms=0.0, drop=0.0)

    def describe(self) -> dict[str, str]:
        return {lk.name: lk.state.describe() for lk in self.links.values()}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per link: bytes forwarded and dropped, resets (both connections together), and per
        connection kind (``grpc``, ``tcp``; ``tcp`` only for a link that proxies its TCP
        link): connections accepted, bytes forwarded and dropped."""
        out: dict[str, dict[str, Any]] = {}
        for lk in self.links.values():
            rec: dict[str, Any] = {
                "fwd": lk.bytes_fwd,
                "dropped": lk.bytes_dropped,
                "resets": lk.resets,
            }
            for kind in KINDS:
                if kind == "tcp" and lk.tcp_port is None:
                    continue
                rec[kind] = {
                    "conns": lk.accepted[kind],
                    "fwd": lk.fwd_by[kind],
                    "dropped": lk.dropped_by[kind],
                }
            out[lk.name] = rec
        return out

    def close(self) -> None:
        async def _close() -> None:
            for link in self.links.values():
                for c in list(link.conns):
                    c.close()
                for server in (link.server, link.tcp_server):
                    if server is not None:
                        server.close()
            for _port, through in self.demuxes.values():
                for c in list(through.conns):
                    c.close()
            for srv in self._servers:
                srv.close()

        with contextlib.suppress(Exception):
            self._call(_close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(2.0)
        if not self._thread.is_alive():
            self.loop.close()  # its self-pipe and selector
