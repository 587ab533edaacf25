"""A local cluster of real ``raftlease serve`` processes on one machine.

One manager for everything that starts nodes as processes: the integration tests, the
jepsen-style harness, the benchmarks and ``raftlease cluster`` (``make run``)::

    from raftlease.testing import LocalCluster

    with LocalCluster(tmp_path) as cluster:  # n1..n3 on free 127.0.0.1 ports
        cluster.start_all()
        leader = cluster.wait_leader()
        cluster.pause(leader)  # SIGSTOP; resume() is SIGCONT
        cluster.resume(leader)
        cluster.kill("n2")  # SIGKILL, reaped
        cluster.start("n2", "--tick", "10ms")  # more `serve` arguments for this start
    # leaving the block stops every node: SIGTERM, SIGKILL after the grace period

Each node runs ``LAUNCHER serve --id ID --listen ADDR --peers ... --data-dir DIR
--cluster-id CID [--client-addresses ...] [SERVE_ARGS] [EXTRA]``, with its output in its
own log file. The launcher defaults to ``python -m raftlease``; a harness that must do
something in the node process first (install probes, monkeypatch, set NodeConfig fields the
command line does not have) passes its own script, which must accept the same ``serve``
arguments. ``peer_addresses`` gives each node its own view of where its peers are (the
jepsen harness routes every directed link through a proxy); the nodes then also get
``--client-addresses`` with the real listen addresses, for leader hints. ``peer_listen`` and
``peer_links`` add ``--peer-listen`` / ``--peer-links`` to a node's command (where it takes
plain-TCP peer links, and where it dials each peer's; the harness proxies those too).

Status polling uses gRPC, imported only when a status is asked for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from raftlease.v1.cluster_pb2 import StatusResponse

__all__ = [
    "DEFAULT_LAUNCHER",
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "NoLeaderError",
    "NodeExitedError",
    "WaitInterrupted",
    "free_port",
    "node_status",
]

DEFAULT_LAUNCHER: tuple[str, ...] = (sys.executable, "-m", "raftlease")
LEADER_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
POLL_S = 0.05
# Signals after which the node's exit is the caller's doing, not a crash.
_ENDING = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT})


def free_port(host: str = "127.0.0.1", *, avoid: Collection[int] = ()) -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel's pick for port 0).

    ``avoid``: ports already handed out, when several distinct ports are needed. The port
    is released before returning, so another process can still take it first.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


def node_status(address: str, timeout: float = 0.5) -> StatusResponse | None:
    """One node's own Cluster.Status over a fresh channel, or None if it does not answer."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        return _ask_status(channel, timeout)


def _ask_status(channel: Any, timeout: float) -> StatusResponse | None:
    """Cluster.Status over ``channel`` (a grpc.Channel), or None on any RPC error."""
    import grpc

    from raftlease.v1 import cluster_pb2, cluster_pb2_grpc

    try:
        st: StatusResponse = cluster_pb2_grpc.ClusterStub(channel).Status(
            cluster_pb2.StatusRequest(), timeout=timeout
        )
    except grpc.RpcError:
        return None
    return st


class LocalClusterError(Exception):
    """A local cluster did not come up as asked."""


class NoLeaderError(LocalClusterError, TimeoutError):
    """No running node said it leads within the time given."""


class WaitInterrupted(LocalClusterError):
    """The ``stop`` event of a wait was set."""


class NodeExitedError(LocalClusterError):
    """A node's process exited though nothing here stopped it."""

    def __init__(self, node_id: str, returncode: int, log_path: Path) -> None:
        super().__init__(f"node {node_id} exited with code {returncode} (log: {log_path})")
        self.node_id = node_id
        self.returncode = returncode
        self.log_path = log_path


@dataclass(eq=False)
class LocalNode:
    """One node of a LocalCluster and its current process (None before the first start)."""

    id: str
    address: str
    data_dir: Path
    log_path: Path  # stdout and stderr of every incarnation, appended
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False  # SIGSTOPped
    stopping: bool = False  # killed or terminated on purpose: its exit is no crash
    starts: int = 0  # incarnations so far
    # (extra, env, launcher) of the last start, for restart()
    last_start: tuple[tuple[str, ...], dict[str, str | None] | None, tuple[str, ...] | None] = (
        (),
        None,
        None,
    )

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of the current process; None while it runs or before any start."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """The node's log (all incarnations so far), "" if it has none yet."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_lines(self, lines: int = 40) -> list[str]:
        """The last ``lines`` lines of the node's log."""
        return self.log_text().splitlines()[-lines:]


class LocalCluster:
    """N ``raftlease serve`` processes on one host, each with its own data dir and log.

    ``root`` holds the data dirs and logs: ``data_dir`` and ``log_file`` are templates
    relative to it (``{id}`` is the node id; each log collects stdout and stderr of every
    incarnation). ``ids`` default to n1..nN, ``ports`` to free ports (:func:`free_port`),
    ``cluster_id`` to a fresh uuid. ``serve_args`` go to every start, after the generated
    arguments. ``env`` changes the nodes' environment (a None value removes the variable);
    without it they inherit this process's. ``launcher`` is the command the ``serve``
    arguments follow (default ``python -m raftlease``). ``peer_addresses[node][peer]`` is
    where ``node`` reaches ``peer`` (default: the listen addresses). ``peer_listen[node]``:
    the node's ``--peer-listen`` (HOST:PORT, auto or off); ``peer_links[node][peer]``: where
    ``node`` dials ``peer``'s plain-TCP link (``--peer-links``); a node they do not name gets
    neither flag (serve's defaults). ``new_session`` puts every node in a session of its own
    (a terminal's Ctrl-C then reaches only this process).
    ``stop_grace``: how long SIGTERM has before SIGKILL. ``channel_factory(address)``: the
    grpc.Channel to poll a node's status over (default plaintext; a TLS cluster's test gives
    a secure channel).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        n: int = 3,
        *,
        ids: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        cluster_id: str | None = None,
        serve_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        launcher: Sequence[str] = DEFAULT_LAUNCHER,
        peer_addresses: Mapping[str, Mapping[str, str]] | None = None,
        peer_listen: Mapping[str, str] | None = None,
        peer_links: Mapping[str, Mapping[str, str]] | None = None,
        data_dir: str = "{id}",
        log_file: str = "{id}.log",
        cwd: str | os.PathLike[str] | None = None,
        new_session: bool = False,
        stop_grace: float = STOP_GRACE_S,
        channel_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.channel_factory = channel_factory
        node_ids = list(ids) if ids is not None else [f"n{i + 1}" for i in range(n)]
        if ports is None:
            picked: list[int] = []
            for _ in node_ids:
                picked.append(free_port(host, avoid=picked))
            ports = picked
        if len(ports) != len(node_ids):
            raise ValueError(f"{len(ports)} ports for {len(node_ids)} nodes")
        self.cluster_id = uuid.uuid4().hex if cluster_id is None else cluster_id
        self.serve_args = list(serve_args)
        self.env: dict[str, str | None] = dict(env or {})
        self.launcher = list(launcher)
        self.peer_addresses = (
            None
            if peer_addresses is None
            else {nid: dict(peers) for nid, peers in peer_addresses.items()}
        )
        # kept (and changeable) per node, like peer_addresses: every start reads them
        self.peer_listen: dict[str, str] = dict(peer_listen or {})
        self.peer_links: dict[str, dict[str, str]] = {
            nid: dict(links) for nid, links in (peer_links or {}).items()
        }
        self.cwd = None if cwd is None else Path(cwd)
        self.new_session = new_session
        self.stop_grace = stop_grace
        self.nodes: dict[str, LocalNode] = {
            nid: LocalNode(
                id=nid,
                address=f"{host}:{port}",
                data_dir=self.root / data_dir.format(id=nid),
                log_path=self.root / log_file.format(id=nid),
            )
            for nid, port in zip(node_ids, ports, strict=True)
        }
        self.joiners: set[str] = set()  # nodes that start with --join (add_node)
        self._data_dir_template = data_dir
        self._log_file_template = log_file
        self._channels: dict[str, Any] = {}  # node id -> grpc.Channel, for status()
        self._lock = threading.Lock()

    # -- addresses --------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return list(self.nodes)

    @property
    def addresses(self) -> dict[str, str]:
        """Node id -> listen address (where clients reach it)."""
        return {nid: node.address for nid, node in self.nodes.items()}

    @property
    def endpoints(self) -> list[str]:
        return [node.address for node in self.nodes.values()]

    # -- processes --------------------------------------------------------------------------

    def add_node(
        self, node_id: str, *, host: str = "127.0.0.1", port: int | None = None
    ) -> LocalNode:
        """Register a new node (``port`` or a free one, its data dir and log from the
        cluster's templates) that starts with ``serve --join`` the other nodes' addresses;
        add it with ``raftlease member add``."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} is already a node of this cluster")
        if port is None:
            port = free_port(host, avoid=[n.port for n in self.nodes.values()])
        node = LocalNode(
            id=node_id,
            address=f"{host}:{port}",
            data_dir=self.root / self._data_dir_template.format(id=node_id),
            log_path=self.root / self._log_file_template.format(id=node_id),
        )
        self.joiners.add(node_id)
        self.nodes[node_id] = node
        return node

    def command(
        self, node_id: str, *extra: str, launcher: Sequence[str] | None = None
    ) -> list[str]:
        """The command line that starts ``node_id``."""
        node = self.nodes[node_id]
        own_view = self.peer_addresses is not None
        peers = (self.peer_addresses or {}).get(node_id) or self.addresses
        if node_id in self.joiners:
            others = [n.address for nid, n in self.nodes.items() if nid != node_id]
            where = ["--join", ",".join(others)]
            if own_view:
                where += ["--peers", _spec(peers)]  # its own view of the links (proxies)
        else:
            where = ["--peers", _spec(peers)]
        argv = [
            *(self.launcher if launcher is None else launcher),
            "serve",
            "--id",
            node_id,
            "--listen",
            node.address,
            *where,
            "--data-dir",
            str(node.data_dir),
            "--cluster-id",
            self.cluster_id,
        ]
        if own_view:
            # Only ids this node's --peers names (serve refuses others); a joiner's --peers
            # is completed from the cluster, so it names its own client address only.
            known = {node_id} if node_id in self.joiners else set(peers)
            clients = {k: v for k, v in self.addresses.items() if k in known}
            argv += ["--client-addresses", _spec(clients)]
        listen = self.peer_listen.get(node_id)
        if listen is not None:
            argv += ["--peer-listen", listen]
        links = self.peer_links.get(node_id)
        if links:
            argv += ["--peer-links", _spec(links)]
        return [*argv, *self.serve_args, *extra]

    def start(
        self,
        node_id: str,
        *extra: str,
        env: Mapping[str, str | None] | None = None,
        launcher: Sequence[str] | None = None,
    ) -> LocalNode:
        """Start ``node_id``'s process. ``extra``: more ``serve`` arguments; ``env`` and
        ``launcher``: for this start only, over the cluster's."""
        node = self.nodes[node_id]
        if node.alive():
            raise RuntimeError(f"{node_id} is already running (pid {node.pid})")
        argv = self.command(node_id, *extra, launcher=launcher)
        self._drop_channel(node_id)
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(node.log_path, "ab") as log:  # the child has its own descriptor
            node.proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self._environment(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        node.paused = False
        node.stopping = False
        node.starts += 1
        node.last_start = (
            extra,
            None if env is None else dict(env),
            None if launcher is None else tuple(launcher),
        )
        return node

    def start_all(self, *extra: str, env: Mapping[str, str | None] | None = None) -> None:
        for node_id in self.nodes:
            self.start(node_id, *extra, env=env)

    def signal(self, node_id: str, sig: int) -> None:
        """Send ``sig`` to the node's process (SIGSTOP/SIGCONT are tracked as paused)."""
        node = self.nodes[node_id]
        if node.proc is None:
            raise RuntimeError(f"{node_id} was never started")
        if sig in _ENDING:
            node.stopping = True
        node.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            node.paused = True
        elif sig == signal.SIGCONT:
            node.paused = False

    def pause(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGCONT)

    def reap(self, node_id: str, grace: float | None = None) -> int | None:
        """Wait up to ``grace`` s for the process to exit; SIGKILL it after that. Its exit
        code, or None if it had to be killed (or was never started)."""
        node = self.nodes[node_id]
        if node.proc is None:
            return None
        try:
            return node.proc.wait(timeout=self.stop_grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            node.stopping = True
            node.proc.kill()
            node.proc.wait()
            return None
        finally:
            node.paused = False
            self._drop_channel(node_id)

    def kill(self, node_id: str) -> int | None:
        """SIGKILL the node (a crash) and reap it."""
        node = self.nodes[node_id]
        if node.alive():
            self.signal(node_id, signal.SIGKILL)
        return self.reap(node_id)

    def terminate(self, node_id: str, grace: float | None = None) -> int | None:
        """Stop the node as an operator would: SIGCONT if paused, SIGTERM, SIGKILL after
        ``grace`` s. Its exit code, or None if it had to be killed (or never started)."""
        node = self.nodes[node_id]
        if node.alive():
            if node.paused:
                self.resume(node_id)
            self.signal(node_id, signal.SIGTERM)
        return self.reap(node_id, grace)

    def restart(self, node_id: str, *, hard: bool = False) -> LocalNode:
        """Terminate (``hard``: kill) the node and start it as it was last started."""
        extra, env, launcher = self.nodes[node_id].last_start
        if hard:
            self.kill(node_id)
        else:
            self.terminate(node_id)
        return self.start(node_id, *extra, env=env, launcher=launcher)

    def stop(self, grace: float | None = None) -> dict[str, int | None]:
        """Stop every node: SIGCONT the paused, SIGTERM all at once (so the survivors do not
        elect a leader meanwhile), SIGKILL what is left after ``grace`` s. Exit codes per
        node (None: killed, or never started)."""
        for node in self.nodes.values():
            if node.alive():
                if node.paused:
                    self.resume(node.id)
                self.signal(node.id, signal.SIGTERM)
        deadline = time.monotonic() + (self.stop_grace if grace is None else grace)
        codes = {
            node_id: self.reap(node_id, max(0.0, deadline - time.monotonic()))
            for node_id in self.nodes
        }
        with self._lock:
            channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()
        return codes

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------------------

    def status(self, node_id: str, timeout: float = 0.5) -> StatusResponse | None:
        """The node's own Cluster.Status, or None if it is not running or does not answer.
        A channel per node is kept while it answers."""
        import grpc

        node = self.nodes[node_id]
        if not node.alive():
            return None
        with self._lock:
            channel = self._channels.get(node_id)
            if channel is None:
                make = self.channel_factory or grpc.insecure_channel
                channel = self._channels[node_id] = make(node.address)
        st = _ask_status(channel, timeout)
        if st is None:
            # A new channel next time: no reconnect backoff once the node is back.
            self._drop_channel(node_id)
        return st

    def leader_status(self, exclude: Collection[str] = ()) -> StatusResponse | None:
        """One poll: the status of a running, unpaused node that says it leads, else None."""
        for node in self.nodes.values():
            if node.id in exclude or node.paused or not node.alive():
                continue
            st = self.status(node.id)
            if st is not None and st.leader_id and st.leader_id == st.node_id:
                return st
        return None

    def wait_leader_status(
        self,
        timeout: float = LEADER_TIMEOUT_S,
        *,
        exclude: Collection[str] = (),
        stop: threading.Event | None = None,
        check_exits: bool = False,
    ) -> StatusResponse:
        """Poll until a running, unpaused node (not in ``exclude``) says it leads; its status.

        Raises NoLeaderError after ``timeout`` s (with every log's tail), WaitInterrupted
        once ``stop`` is set, and with ``check_exits`` NodeExitedError as soon as a node's
        process has exited that nothing here stopped.
        """
        deadline = time.monotonic() + timeout
        while True:
            if stop is not None and stop.is_set():
                raise WaitInterrupted("stopped while waiting for a leader")
            if check_exits:
                for node in self.nodes.values():
                    code = node.returncode
                    if code is not None and not node.stopping:
                        raise NodeExitedError(node.id, code, node.log_path)
            st = self.leader_status(exclude)
            if st is not None:
                return st
            if time.monotonic() >= deadline:
                raise NoLeaderError(f"no leader within {timeout:g}s\n{self.log_tails()}")
            if stop is not None:
                stop.wait(POLL_S)
            else:
                time.sleep(POLL_S)

    def wait_leader(
        self,
        timeout: float = LEADER_TIMEOUT_S,
        *,
        exclude: Collection[str] = (),
        stop: threading.Event | None = None,
        check_exits: bool = False,
    ) -> str:
        """:meth:`wait_leader_status`, the leader's id."""
        st = self.wait_leader_status(timeout, exclude=exclude, stop=stop, check_exits=check_exits)
        return str(st.node_id)

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every node's log, each under a header."""
        return "\n".join(
            f"----- {node.id} ({node.address}) log tail -----\n" + "\n".join(node.log_lines(lines))
            for node in self.nodes.values()
        )

    # -- internals --------------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str | None] | None) -> dict[str, str] | None:
        changes = {**self.env, **(extra or {})}
        if not changes:
            return None  # inherit ours unchanged
        env = dict(os.environ)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _drop_channel(self, node_id: str) -> None:
        with self._lock:
            channel = self._channels.pop(node_id, None)
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()


def _spec(addresses: Mapping[str, str]) -> str:
    """``{"n1": "h:1", ...}`` -> ``n1=h:1,...`` (the ``--peers`` / ``--peer-links`` syntax)."""
    return ",".join(f"{nid}={address}" for nid, address in addresses.items())
