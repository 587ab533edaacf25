"""The ``raftlease`` command (docs/guarantees.md, "Command line").

    raftlease cluster [--nodes 3] [--data-dir DIR] [--base-port 7001]
    raftlease serve --id ID --listen HOST:PORT --peers ID=HOST:PORT,... --data-dir DIR
    raftlease acquire NAME --ttl 10s [--wait 30s] [--holder H]
    raftlease run NAME [--ttl 10s] [--wait forever] [--max-restarts 5] [--restart-window D]
                  [--heartbeat-timeout D] [--health-cmd CMD] [--health-port P] -- CMD [ARGS...]
    raftlease holder NAME | leases | watch [NAME] | status [--json] | transfer [--to ID]
    raftlease probe [--name canary] [--ttl 2s] [--json]

Every command takes ``--endpoints`` (default: ``RAFTLEASE_ENDPOINTS``, else the three local
ports) and, on failure, exits non-zero after printing ONE line ``raftlease: error: ...``.
Durations accept ``10s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from raftlease.errors import RaftLeaseError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

    from raftlease.client import Lease, LeaseClient, LeaseInfo
    from raftlease.config_file import Resolution

__all__ = ["main", "parse_duration_arg", "parse_peers"]

PROG = "raftlease"
DEFAULT_CLUSTER_ID = "raftlease"
LEADER_WAIT_S = 30.0
STOP_GRACE_S = 5.0


class UsageError(Exception):
    """A bad command line; main() prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# Argument types


def parse_duration_arg(text: str) -> float:
    """argparse type for durations: ``10s``, ``500ms``, ``2m``, ``1h``, bare seconds."""
    from raftlease.client._common import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _wait_arg(text: str) -> float | None:
    """``--wait``: a duration, or ``forever``/``inf`` (None)."""
    if text.strip().lower() in ("forever", "inf", "infinity", "never"):
        return None
    return parse_duration_arg(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _address(text: str) -> str:
    from raftlease.client._common import parse_endpoints
    from raftlease.errors import ConfigError

    try:
        (address,) = parse_endpoints(text)
    except (ConfigError, ValueError) as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one HOST:PORT address" if "," in text else str(err)
        ) from None
    return address


def _peer_listen(text: str) -> str:
    """argparse type of --peer-listen: ``auto``, ``off`` or one HOST:PORT."""
    word = text.strip().lower()
    return word if word in ("auto", "off") else _address(text)


def _address_list(text: str) -> list[str]:
    """argparse type: ``HOST:PORT,HOST:PORT,...`` (at least one)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected HOST:PORT,... (at least one address)")
    return [_address(t) for t in items]


def parse_peers(text: str) -> dict[str, str]:
    """``n1=127.0.0.1:7001,n2=...`` -> ``{"n1": "127.0.0.1:7001", ...}``."""
    peers: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        node_id, sep, address = item.partition("=")
        node_id = node_id.strip()
        if not sep or not node_id:
            raise argparse.ArgumentTypeError(f"peer {item!r} is not ID=HOST:PORT")
        if node_id in peers:
            raise argparse.ArgumentTypeError(f"peer id {node_id!r} appears twice")
        peers[node_id] = _address(address.strip())
    if not peers:
        raise argparse.ArgumentTypeError("no peers given: use ID=HOST:PORT,ID=HOST:PORT,...")
    return peers


def _log_level(text: str) -> str:
    from raftlease.logs import parse_log_level

    try:
        return parse_log_level(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _serve_default(dest: str) -> str:
    """The default of a ``serve`` setting as help shows it (raftlease/config_file.py)."""
    from raftlease.config_file import SERVE_SETTINGS

    return SERVE_SETTINGS[dest].default


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


# ---------------------------------------------------------------------------------------------
# Output helpers


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        print(line.rstrip(), file=out)


def _fmt_s(seconds: float) -> str:
    from raftlease.client._common import format_duration

    return format_duration(seconds)


def _fmt_map(mapping: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def _print_json(value: object) -> None:
    print(json.dumps(value, sort_keys=True))


def _client(args: argparse.Namespace) -> LeaseClient:
    from raftlease.client import LeaseClient

    return LeaseClient(args.endpoints, timeout=args.timeout, **_security_args(args))


def _security_args(args: argparse.Namespace) -> dict[str, Any]:
    """``tls`` and ``token`` for a client from --tls-ca/--tls-cert/--tls-key/--token-file;
    what is not given comes from RAFTLEASE_TLS_* / RAFTLEASE_TOKEN* (docs/security.md)."""
    from raftlease.client import TLSConfig
    from raftlease.client._tls import read_token_file

    out: dict[str, Any] = {}
    flags = (getattr(args, "tls_ca", None), getattr(args, "tls_cert", None))
    if any(flags) or getattr(args, "tls_key", None):
        env = TLSConfig.from_env() or TLSConfig()
        out["tls"] = TLSConfig(
            ca=args.tls_ca or env.ca, cert=args.tls_cert or env.cert, key=args.tls_key or env.key
        )
    if getattr(args, "token_file", None):
        out["token"] = read_token_file(args.token_file)
    return out


class _Stop:
    """SIGINT/SIGTERM -> a flag (and an Event), restored on exit."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_serve(args: argparse.Namespace) -> int:
    # main_serve refuses (one line "raftlease serve: error: ...", exit 2, nothing written) an
    # --id missing from --peers, a --listen port other than the node's own --peers entry, an
    # empty --cluster-id, a --tick outside 1ms..100ms, a busy port, and a data dir created
    # for another cluster id, node id or member set. Nothing is filled in silently here.
    # --config FILE and RAFTLEASE_* fill in what the flags do not say (raftlease/config_file.py),
    # first: --join, --id and --listen may come from them.
    overrides: dict[str, float | int] = {}
    resolved = _resolve_serve(args)
    if args.join:
        from raftlease.cli_members import prepare_join

        refused = prepare_join(args)
        if refused:
            return refused
    refused = _prepare_serve(args, overrides, resolved)
    if refused:
        return refused
    if args.join:
        overrides["join"] = True
    from raftlease.server import main_serve

    main_serve(
        args.id,
        args.listen,
        dict(args.peers),
        args.data_dir,
        DEFAULT_CLUSTER_ID if args.cluster_id is None else args.cluster_id,
        client_addresses=dict(args.client_addresses) if args.client_addresses else None,
        metrics=args.metrics,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        auth_rules=args.auth_rules,
        log_format=args.log_format or "text",
        log_level=args.log_level or "INFO",
        **overrides,
    )
    return 0


#: ServerConfig fields cmd_serve passes to main_serve by name, not as overrides.
_SERVE_NAMED = {"node_id", "peers", "cluster_id", "client_addresses"}


def _resolve_serve(args: argparse.Namespace) -> Resolution:
    """Complete ``args`` in place from --config FILE and the RAFTLEASE_* variables (flags win;
    raftlease/config_file.py). Problems are kept for :func:`_prepare_serve` to report."""
    from raftlease.config_file import resolve_serve_args
    from raftlease.logs import quiet_grpc_core

    quiet_grpc_core()  # before grpc is imported: its C-core lines stay out of the node log
    return resolve_serve_args(args, serve_parser(), os.environ)


def _prepare_serve(
    args: argparse.Namespace,
    overrides: dict[str, float | int],
    res: Resolution | None = None,
) -> int:
    """Complete ``args`` (unless ``res`` says :func:`_resolve_serve` did), put the ServerConfig
    fields they set into ``overrides``, and check everything at once. 0 to go on; else the exit
    code after ONE line on stderr: ``raftlease serve: error: ...`` listing every problem (of the
    file, the environment and ServerConfig's rules), before anything touches the data dir."""
    if res is None:
        res = _resolve_serve(args)
    missing = [
        f"{o.flag} (or {o.key} in --config, or ${o.env})"
        for o in res.missing
        if getattr(args, o.dest) is None  # --join may have filled --peers in since
    ]
    if missing and not res.problems:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    problems = [*res.problems, *(f"{m} is required" for m in missing)]
    required = [o.dest for o in res.options if o.doc is not None and o.doc.required]
    if all(getattr(args, dest) is not None for dest in required):
        # ServerConfig's rules too, on every value that could be read
        from raftlease.server import listen_problems
        from raftlease.settings import ServerConfig
        from raftlease.types import NodeId

        overrides.update(res.server_overrides(args, _SERVE_NAMED))
        cfg = ServerConfig(
            node_id=NodeId(args.id),
            cluster_id=DEFAULT_CLUSTER_ID if args.cluster_id is None else args.cluster_id,
            peers={NodeId(k): v for k, v in args.peers.items()},
            client_addresses={NodeId(k): v for k, v in (args.client_addresses or {}).items()},
            **overrides,  # type: ignore[arg-type]  # float | int values for the numeric fields
        )
        problems += cfg.problems(res.names()) + listen_problems(cfg, args.listen)
    if not problems:
        return 0
    from raftlease.server import ServeRefused

    message = " ".join(str(ServeRefused(*problems)).split())
    print(f"{PROG} serve: error: {message}", file=sys.stderr, flush=True)
    return 2


def serve_parser() -> argparse.ArgumentParser:
    """The ``serve`` command's parser: its options are the settings of --config FILE, the
    RAFTLEASE_* variables and docs/settings.md."""
    for action in build_parser()._actions:  # argparse lists subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            serve: argparse.ArgumentParser = action.choices["serve"]
            return serve
    raise LookupError("the parser has no serve command")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def cmd_cluster(args: argparse.Namespace) -> int:
    from raftlease.testing.local import (
        LocalCluster,
        NodeExitedError,
        NoLeaderError,
        WaitInterrupted,
    )

    if not 1 <= args.nodes <= 9:
        raise UsageError(f"--nodes must be between 1 and 9, got {args.nodes}")
    if not 1 <= args.base_port <= 65535 - args.nodes:
        raise UsageError(f"--base-port {args.base_port} leaves no room for {args.nodes} ports")
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    id_file = data_dir / "cluster-id"
    if id_file.exists():
        cluster_id = id_file.read_text(encoding="utf-8").strip()
    else:
        cluster_id = uuid.uuid4().hex
        id_file.write_text(cluster_id + "\n", encoding="utf-8")
    host = args.host
    ids = [f"n{i}" for i in range(1, args.nodes + 1)]
    # Data in DIR/nI, output in DIR/nI.log; the nodes inherit our environment and terminal
    # (a Ctrl-C reaches them too; we then stop them with SIGTERM, SIGKILL after 5 s).
    cluster = LocalCluster(
        data_dir,
        ids=ids,
        host=host,
        ports=[args.base_port + i for i in range(args.nodes)],
        cluster_id=cluster_id,
        stop_grace=STOP_GRACE_S,
    )
    for nid, node in cluster.nodes.items():
        if not _port_free(host, node.port):
            return _fail(f"{node.address} (for {nid}) is in use; is another cluster running?")
    metrics: dict[str, str] = {}
    if args.metrics_base_port is not None:
        if not 1 <= args.metrics_base_port <= 65535 - args.nodes:
            raise UsageError(
                f"--metrics-base-port {args.metrics_base_port} leaves no room for "
                f"{args.nodes} ports"
            )
        metrics = {nid: f"{host}:{args.metrics_base_port + i}" for i, nid in enumerate(ids)}
        for nid, address in metrics.items():
            if not _port_free(host, int(address.rsplit(":", 1)[1])):
                return _fail(f"{address} (metrics of {nid}) is in use")
    out = sys.stdout
    with _Stop() as stop:
        try:
            for nid in cluster.nodes:
                extra = ("--metrics", metrics[nid]) if nid in metrics else ()
                cluster.start(nid, *extra)
            try:
                status = cluster.wait_leader_status(
                    LEADER_WAIT_S, stop=stop.event, check_exits=True
                )
            except WaitInterrupted:
                return 0
            except NodeExitedError as err:
                # Exit 2: serve refused its settings or data dir in its last line.
                lines = 1 if err.returncode == 2 else 3
                return _fail(
                    f"node {err.node_id} exited with code {err.returncode} during start-up: "
                    f"{_tail(err.log_path, lines)} (log: {err.log_path})"
                )
            except NoLeaderError:
                return _fail(
                    f"no leader elected within {LEADER_WAIT_S:.0f}s; see the logs in {data_dir}"
                )
            joined = ",".join(cluster.endpoints)
            print(
                f"raftlease cluster {cluster_id}: {args.nodes} nodes up, "
                f"leader {status.node_id} (term {status.term})",
                file=out,
            )
            print(
                f"  insecure: plaintext on {host}, no TLS, no authentication (docs/security.md)",
                file=out,
            )
            for nid, node in cluster.nodes.items():
                scrape = f"  metrics http://{metrics[nid]}/metrics" if nid in metrics else ""
                print(
                    f"  {nid}  {node.address}  pid {node.pid}  "
                    f"data {node.data_dir}  log {node.log_path}{scrape}",
                    file=out,
                )
            print("", file=out)
            print("endpoints, for your shell:", file=out)
            print(f"  export RAFTLEASE_ENDPOINTS={joined}", file=out)
            print("", file=out)
            print("and from Python:", file=out)
            print("  from raftlease import LeaseClient", file=out)
            print(f'  with LeaseClient("{joined}") as client:', file=out)
            print('      with client.acquire("demo", ttl=10.0, wait=30.0) as lease:', file=out)
            print('          print("holding", lease.name, "token", lease.fencing_token)', file=out)
            print("", file=out)
            print("Ctrl-C stops the cluster.", file=out, flush=True)
            reported: set[str] = set()
            while not stop.event.wait(0.5):
                for nid, node in cluster.nodes.items():
                    if nid not in reported and node.returncode is not None:
                        reported.add(nid)
                        print(
                            f"raftlease cluster: node {nid} exited with code "
                            f"{node.returncode} (not restarted; log: {node.log_path})",
                            file=sys.stderr,
                            flush=True,
                        )
                if len(reported) == len(cluster.nodes):
                    return _fail("every node has exited")
            print("raftlease cluster: stopping", file=sys.stderr, flush=True)
            return 0
        finally:
            cluster.stop()


def cmd_acquire(args: argparse.Namespace) -> int:
    lost_event = threading.Event()

    def on_lost(lease: Lease) -> None:
        lost_event.set()

    with _client(args) as client:
        # Ctrl-C while waiting in the queue interrupts the call (KeyboardInterrupt: exit 130).
        lease = client.acquire(
            args.name,
            ttl=args.ttl,
            wait=args.wait,
            holder=args.holder,
            metadata=dict(args.metadata or []),
            on_lost=on_lost,
        )
        with _Stop() as stop:
            print(
                f"acquired lease {lease.name}: fencing_token={lease.fencing_token} "
                f"lease_id={lease.lease_id} ttl={_fmt_s(lease.ttl)} holder={lease.holder}",
                flush=True,
            )
            print("keeping it alive; press Ctrl-C to release", file=sys.stderr, flush=True)
            while not stop.event.is_set():
                if lost_event.wait(0.1) or lease.lost.is_set():
                    return _fail(f"lease {lease.name} lost: {lease.lost_reason or 'expired'}")
            lease.release()
            print(f"released lease {lease.name}", flush=True)
            return 0


def cmd_run(args: argparse.Namespace) -> int:
    from raftlease.client.runner import RunnerConfig, RunnerError, run_singleton

    if not args.command:
        raise UsageError("no command given: use raftlease run NAME [--ttl 10s] -- CMD [ARGS...]")
    config = RunnerConfig(
        name=args.name,
        command=list(args.command),
        ttl=args.ttl,
        wait=args.wait,
        max_restarts=args.max_restarts,
        holder=args.holder,
        endpoints=args.endpoints,
        timeout=args.timeout,
        heartbeat_timeout=args.heartbeat_timeout,
        health_cmd=args.health_cmd,
        health_port=args.health_port,
        health_interval=args.health_interval,
        health_retries=args.health_retries,
        kill_grace=args.kill_grace,
        restart_delay=args.restart_delay,
        restart_window=args.restart_window,
    )
    try:
        config.check()
    except RunnerError as err:
        raise UsageError(str(err)) from None
    _export_security(args)  # the runner's clients read RAFTLEASE_TLS_* / RAFTLEASE_TOKEN_FILE
    return run_singleton(config)  # --wait passing raises WaitExpired: one error line, exit 1


def _export_security(args: argparse.Namespace) -> None:
    """Put ``run``'s --tls-*/--token-file into the environment (file paths, not secrets)."""
    for flag, env in (
        ("tls_ca", "RAFTLEASE_TLS_CA"),
        ("tls_cert", "RAFTLEASE_TLS_CERT"),
        ("tls_key", "RAFTLEASE_TLS_KEY"),
        ("token_file", "RAFTLEASE_TOKEN_FILE"),
    ):
        value = getattr(args, flag, None)
        if value:
            os.environ[env] = str(Path(value).resolve())
    _security_args(args)  # refuse an unreadable file now, with one line


def cmd_certs(args: argparse.Namespace) -> int:
    """Write a development CA and node/client certificates (raftlease/certs.py)."""
    from raftlease.certs import CertsError, generate

    def names(text: str | None) -> list[str]:
        return [n.strip() for n in (text or "").split(",") if n.strip()]

    hosts = ["localhost", "127.0.0.1", "::1", *names(args.hosts)]
    try:
        issued = generate(args.dir, names(args.nodes), names(args.clients), hosts=hosts)
    except CertsError as err:
        raise UsageError(str(err)) from None
    print(f"wrote a development CA and certificates to {issued.directory}:")
    for path in issued.files():
        print(f"  {path.name}{'  (mode 0600)' if path.suffix == '.key' else ''}")
    print(
        "start each node with --tls-cert DIR/node-ID.crt --tls-key DIR/node-ID.key "
        "--tls-ca DIR/ca.crt; see docs/security.md"
    )
    return 0


def _info_lines(info: LeaseInfo) -> list[tuple[str, str]]:
    return [
        ("holder", info.holder),
        ("fencing token", str(info.fencing_token)),
        ("lease id", str(info.lease_id)),
        ("ttl", _fmt_s(info.ttl)),
        ("remaining", _fmt_s(info.remaining)),
        ("waiters", str(info.waiters)),
        ("metadata", _fmt_map(info.metadata)),
        ("health", _fmt_map(info.health)),
    ]


def cmd_holder(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.holder(args.name)
    if args.json:
        _print_json(None if info is None else info.to_dict())
        return 0
    if info is None:
        print(f"{args.name} is free")
        return 0
    print(f"{info.name} is held by {info.holder}")
    for key, value in _info_lines(info)[1:]:
        print(f"  {key:<14} {value}")
    return 0


def cmd_leases(args: argparse.Namespace) -> int:
    with _client(args) as client:
        infos = client.leases(args.prefix)
    if args.json:
        _print_json([info.to_dict() for info in infos])
        return 0
    if not infos:
        print("no leases held" + (f" with prefix {args.prefix!r}" if args.prefix else ""))
        return 0
    _table(
        ["NAME", "HOLDER", "TOKEN", "LEASE_ID", "TTL", "REMAINING", "WAITERS", "HEALTH"],
        [
            [
                i.name,
                i.holder,
                i.fencing_token,
                i.lease_id,
                _fmt_s(i.ttl),
                _fmt_s(i.remaining),
                i.waiters,
                _fmt_map(i.health),
            ]
            for i in infos
        ],
        sys.stdout,
    )
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_watch(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM end the watch (even where SIGINT was ignored, e.g. under `cmd &`).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    with _client(args) as client:
        events = client.watch(args.name)
        try:
            for event in events:
                if args.json:
                    _print_json(
                        {
                            "kind": event.kind,
                            "name": event.name,
                            "index": event.index,
                            "lease": None if event.lease is None else event.lease.to_dict(),
                        }
                    )
                else:
                    lease = event.lease
                    detail = (
                        f"holder={lease.holder} token={lease.fencing_token} "
                        f"lease_id={lease.lease_id}"
                        if lease is not None
                        else ""
                    )
                    if lease is not None and lease.health:
                        detail += f" health={_fmt_map(lease.health)}"
                    print(f"{event.kind:<8}  {event.name}  {detail}  index={event.index}")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return 0
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status()
    if all(n["role"] == "unreachable" for n in status["nodes"]):
        errors = "; ".join(f"{n['address']}: {n.get('error', '?')}" for n in status["nodes"])
        return _fail(f"no node answered: {errors}")
    if args.json:
        _print_json(status)
        return 0
    leader = status["leader"] or "none"
    print(
        f"cluster {status['cluster_id'] or '?'}  leader {leader}  term {status['term']}  "
        f"configuration index {status.get('config_index') or 0}",
    )
    rows = []
    for n in status["nodes"]:
        heard = n["last_heard_ms"]
        reachable = n["reachable"]
        rows.append(
            [
                n["id"],
                n["address"],
                n["role"] + (" (learner)" if n.get("learner") else ""),
                n["term"],
                n["commit_index"],
                n["applied_index"],
                None if heard is None or heard < 0 else f"{heard}ms",
                n["lag"],
                None if reachable is None else ("yes" if reachable else "no"),
            ]
        )
    _table(
        ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAST_HEARD", "LAG", "REACHABLE"],
        rows,
        sys.stdout,
    )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    with _client(args) as client:
        leader = client.transfer_leadership(args.to)
    print(f"leader is now {leader or 'unknown'}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """A synthetic transaction: acquire, renew, check the token, release (docs/election.md).

    Prints each step's latency and the total; on failure ONE error line naming the step, and
    exit 1 (with --json, also a JSON object with ``"ok": false`` on stdout).
    """
    from raftlease.client import LeaseHeld

    steps: list[tuple[str, float]] = []
    state: dict[str, Any] = {"step": "connect", "token": None}
    started = time.perf_counter()

    def timed(step: str, fn: Callable[[], Any]) -> Any:
        state["step"] = step
        t0 = time.perf_counter()
        result = fn()
        steps.append((step, (time.perf_counter() - t0) * 1000.0))
        return result

    def acquire(client: LeaseClient) -> Lease:
        try:  # not queueing first: a dead cluster then fails after --timeout, not --wait too
            return client.acquire(args.name, ttl=args.ttl, holder=args.holder)
        except LeaseHeld:
            if args.wait <= 0:
                raise
            return client.acquire(args.name, ttl=args.ttl, wait=args.wait, holder=args.holder)

    try:
        with _client(args) as client:
            lease = timed("acquire", lambda: acquire(client))
            state["token"] = lease.fencing_token
            timed("renew", lease.renew)
            if not timed("check_token", lambda: client.check_token(args.name, lease.fencing_token)):
                raise RaftLeaseError(
                    f"the cluster says fencing token {lease.fencing_token} is not the current "
                    f"grant of {args.name}"
                )
            timed("release", lease.release)
    except RaftLeaseError as err:
        total = (time.perf_counter() - started) * 1000.0
        message = f"probe {args.name} failed at {state['step']} after {total:.0f}ms: {err}"
        if args.json:
            _print_json(
                {
                    "ok": False,
                    "name": args.name,
                    "failed_step": state["step"],
                    "error": " ".join(str(err).split()),
                    "steps": [{"step": k, "ms": round(v, 3)} for k, v in steps],
                    "total_ms": round(total, 3),
                }
            )
        return _fail(message)
    total = (time.perf_counter() - started) * 1000.0
    if args.json:
        _print_json(
            {
                "ok": True,
                "name": args.name,
                "fencing_token": state["token"],
                "steps": [{"step": k, "ms": round(v, 3)} for k, v in steps],
                "total_ms": round(total, 3),
            }
        )
        return 0
    for step, ms in steps:
        extra = f"  fencing_token={state['token']}" if step == "acquire" else ""
        print(f"{step:<12} {ms:8.2f} ms{extra}")
    print(f"{'total':<12} {total:8.2f} ms  ok")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


_TTL_HELP = "how long the lease lives without a renewal, 1s..1h (default 10s)"


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--endpoints",
        metavar="HOST:PORT,...",
        default=None,
        help="cluster endpoints (default: $RAFTLEASE_ENDPOINTS, else 127.0.0.1:7001-7003)",
    )
    common.add_argument(
        "--timeout",
        type=parse_duration_arg,
        default=5.0,
        metavar="DURATION",
        help="give up when no leader answers for this long (default 5s)",
    )
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON")
    # Every command that talks to a cluster (docs/security.md); serve has its own TLS flags.
    security = _Parser(add_help=False)
    security.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=None,
        help="speak TLS, verifying the nodes against this CA certificate (PEM) "
        "(default: $RAFTLEASE_TLS_CA; unset: plaintext)",
    )
    security.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=None,
        help="client certificate (PEM) for clusters that require one (default: "
        "$RAFTLEASE_TLS_CERT)",
    )
    security.add_argument(
        "--tls-key", metavar="FILE", default=None, help="its key (default: $RAFTLEASE_TLS_KEY)"
    )
    security.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help="send the bearer token in FILE (default: $RAFTLEASE_TOKEN, else "
        "$RAFTLEASE_TOKEN_FILE); needs TLS",
    )

    parser = _Parser(
        prog=PROG,
        description="Leader election and time-bounded, fenced leases on Raft.",
        epilog="Durations: 10s, 500ms, 2m, 1h, or a bare number of seconds.",
    )
    from raftlease import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    def add(
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help_text: str,
        *parents: _Parser,
    ) -> argparse.ArgumentParser:
        extra = [] if name in ("serve", "cluster", "certs") else [security]
        p = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common, *extra, *parents]
        )
        p.set_defaults(func=fn)
        return p

    p = add("cluster", cmd_cluster, "run a local cluster in the foreground")
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument(
        "--data-dir", default="./raftlease-data", help="data directory (default ./raftlease-data)"
    )
    p.add_argument("--base-port", type=int, default=7001, help="port of n1 (default 7001)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--metrics-base-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve each node's Prometheus metrics at PORT, PORT+1, ... (default: off)",
    )

    p = add("serve", cmd_serve, "run one node in the foreground until SIGTERM/SIGINT")
    # Every serve option is also a key of --config FILE and a RAFTLEASE_* variable
    # (raftlease/config_file.py): keep default=None (the real default is applied after the
    # file and the environment) and give each option its line in config_file.SERVE_SETTINGS.
    p.epilog = (
        "Every option is also a key of --config FILE (--data-dir: data_dir) and an "
        "environment variable (RAFTLEASE_DATA_DIR); flags override the environment, which "
        "overrides the file. Reference: docs/settings.md."
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="read settings from this TOML file (default: $RAFTLEASE_CONFIG, else none)",
    )
    p.add_argument("--id", default=None, help="this node's id (e.g. n1); one of --peers (required)")
    p.add_argument(
        "--listen",
        default=None,
        type=_address,
        metavar="HOST:PORT",
        help="address to listen on; its port must be the one --peers gives for --id (required)",
    )
    p.add_argument(
        "--peers",
        default=None,
        type=parse_peers,
        metavar="ID=HOST:PORT,...",
        help="every member, this node included, the same on every node (the member set is "
        "recorded in the data dir and cannot change yet) (required)",
    )
    p.add_argument(
        "--data-dir", default=None, metavar="DIR", help="this node's data directory (required)"
    )
    p.add_argument(
        "--cluster-id",
        default=None,
        help=f"cluster id, non-empty, the same on every node (default {DEFAULT_CLUSTER_ID})",
    )
    p.add_argument(
        "--client-addresses",
        type=parse_peers,
        default=None,
        metavar="ID=HOST:PORT,...",
        help="where clients reach each node, if peer links go through proxies (default: --peers)",
    )
    p.add_argument(
        "--peer-listen",
        default=None,
        type=_peer_listen,
        metavar="HOST:PORT|auto|off",
        help="where this node takes its peers' Raft messages over a TCP link (mutual TLS with "
        "--tls-cert), a third of gRPC's CPU per message: auto (default) a free port on the "
        "--listen host, announced to each peer over its gRPC link; HOST:PORT a fixed one "
        "(firewalls); off keeps them on gRPC (docs/transport.md)",
    )
    p.add_argument(
        "--peer-links",
        type=parse_peers,
        default=None,
        metavar="ID=HOST:PORT,...",
        help="dial a peer's TCP link at this address instead of the port it announces on "
        "its --peers host (proxies, NAT)",
    )
    p.add_argument(
        "--join",
        default=None,
        type=_address_list,
        metavar="HOST:PORT,...",
        help="join the running cluster at these addresses: start without a configuration, "
        "wait to be added (`raftlease member add`), and never vote before; --peers is then "
        "fetched from the cluster (docs/membership.md)",
    )
    p.add_argument(
        "--tick",
        type=parse_duration_arg,
        default=None,
        metavar="DURATION",
        help=f"core tick, 1ms..100ms (default {_serve_default('tick')}; elections after "
        f"{_serve_default('election_ticks_min')}-{_serve_default('election_ticks_max')} ticks, "
        f"heartbeats every {_serve_default('heartbeat_ticks')})",
    )
    p.add_argument(
        "--election-ticks-min",
        type=int,
        default=None,
        metavar="TICKS",
        help="shortest election timeout, also leader stickiness and CheckQuorum; at least 2 x "
        f"--heartbeat-ticks (default {_serve_default('election_ticks_min')})",
    )
    p.add_argument(
        "--election-ticks-max",
        type=int,
        default=None,
        metavar="TICKS",
        help="longest election timeout, above --election-ticks-min "
        f"(default {_serve_default('election_ticks_max')})",
    )
    p.add_argument(
        "--heartbeat-ticks",
        type=int,
        default=None,
        metavar="TICKS",
        help="leader heartbeat interval; below the leader lease "
        f"(default {_serve_default('heartbeat_ticks')})",
    )
    p.add_argument(
        "--max-drift",
        type=float,
        default=None,
        metavar="FRACTION",
        help="bound on every clock's rate error, 0 <= x < 0.2; sizes the leader lease "
        f"(default {_serve_default('max_drift')} = 1 %%)",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=None,
        metavar="N",
        help="snapshot and compact the log every N applied entries "
        f"(default {_serve_default('snapshot_entries')})",
    )
    p.add_argument(
        "--inherited-wait-grace",
        type=parse_duration_arg,
        default=None,
        metavar="DURATION",
        help="a new leader cancels queued acquires whose client has not come back after this "
        f"(default {_serve_default('inherited_wait_grace')})",
    )
    # Resource limits per client (docs/operations.md, "Limits"): RESOURCE_EXHAUSTED past them.
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest Lease/Cluster request a node decodes, 1024..67108864; peer messages "
        f"may use 64 MiB (default {_serve_default('max_request_bytes')})",
    )
    p.add_argument(
        "--max-waits-per-client",
        type=int,
        default=None,
        metavar="N",
        help="waiting Acquire calls one client (auth identity, else host) may have open "
        f"(default {_serve_default('max_waits_per_client')})",
    )
    p.add_argument(
        "--max-streams-per-client",
        type=int,
        default=None,
        metavar="N",
        help="open Watch and KeepAlive streams per client (auth identity, else host) "
        f"(default {_serve_default('max_streams_per_client')})",
    )
    p.add_argument(
        "--max-leases-per-holder",
        type=int,
        default=None,
        metavar="N",
        help="leases one holder string may hold at once "
        f"(default {_serve_default('max_leases_per_holder')})",
    )
    p.add_argument(
        "--metrics",
        type=_address,
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off; see "
        "docs/operations.md)",
    )
    # TLS and auth (docs/security.md): all three --tls-* or none; default None (--config).
    p.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="this node's certificate (PEM), naming it as URI SAN raftlease://node/ID; with "
        "--tls-key and --tls-ca: mutual TLS for peers and clients (default: plaintext)",
    )
    p.add_argument("--tls-key", default=None, metavar="FILE", help="its private key (PEM)")
    p.add_argument(
        "--tls-ca",
        default=None,
        metavar="FILE",
        help="CA certificate (PEM) every peer's and client's certificate must be signed by",
    )
    p.add_argument(
        "--auth-rules",
        default=None,
        metavar="FILE",
        help="TOML rules: tokens and which identity may acquire/read which names (needs TLS; "
        "default: every client with a certificate may do everything)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text lines, or one JSON object per line (default text)",
    )
    p.add_argument(
        "--log-level",
        type=_log_level,
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)",
    )

    p = add("acquire", cmd_acquire, "take a lease and keep it alive until Ctrl-C")
    p.add_argument("name")
    p.add_argument(
        "--ttl", type=parse_duration_arg, default=10.0, metavar="DURATION", help=_TTL_HELP
    )
    p.add_argument(
        "--wait",
        type=parse_duration_arg,
        default=0.0,
        metavar="DURATION",
        help="if the lease is held, wait in its queue this long, at most 1h (default 0s: "
        "fail at once)",
    )
    p.add_argument("--holder", default=None, help="holder identity (default HOSTNAME:PID)")
    p.add_argument(
        "--metadata",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="repeatable (default: none)",
    )

    p = add("run", cmd_run, "run CMD as a cluster-wide singleton")
    p.add_argument("name")
    p.add_argument(
        "--ttl", type=parse_duration_arg, default=10.0, metavar="DURATION", help=_TTL_HELP
    )
    p.add_argument(
        "--wait",
        type=_wait_arg,
        default=None,
        metavar="DURATION",
        help="how long to wait for the lease (default forever); then exit 1",
    )
    p.add_argument(
        "--max-restarts",
        type=_positive_int,
        default=5,
        metavar="N",
        help="circuit breaker: more than N failures within --restart-window release the "
        "lease and exit (default 5)",
    )
    p.add_argument(
        "--restart-window",
        type=_wait_arg,
        default=None,
        metavar="DURATION",
        help="the window in which the circuit breaker and the restart backoff count "
        "failures (default forever: N failures in total)",
    )
    p.add_argument(
        "--restart-delay",
        type=parse_duration_arg,
        default=1.0,
        metavar="DURATION",
        help="backoff before restarting a failed CMD: none after the first failure within "
        "--restart-window, DURATION after the 2nd, then doubling per failure, at most 30s, "
        "plus up to 20%% jitter; 0 = never wait (default 1s)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=parse_duration_arg,
        default=None,
        metavar="DURATION",
        help="CMD must write a line to $RAFTLEASE_HEARTBEAT_FD at least this often, else it "
        "is hung and restarted (default: not required)",
    )
    p.add_argument(
        "--health-cmd", default=None, metavar="CMD", help="shell command; non-zero = unhealthy"
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=None,
        metavar="PORT",
        help="127.0.0.1:PORT must accept TCP connections",
    )
    p.add_argument(
        "--health-interval",
        type=parse_duration_arg,
        default=2.0,
        metavar="DURATION",
        help="how often to run the health checks (default 2s)",
    )
    p.add_argument(
        "--health-retries",
        type=int,
        default=3,
        metavar="N",
        help="unhealthy after N failed checks in a row (default 3)",
    )
    p.add_argument(
        "--kill-grace",
        type=parse_duration_arg,
        default=5.0,
        metavar="DURATION",
        help="a hung or unhealthy CMD gets SIGTERM, then SIGKILL after this (default 5s)",
    )
    p.add_argument("--holder", default=None, help="holder identity (default HOSTNAME:PID)")
    p.add_argument("command", nargs="*", metavar="-- CMD [ARGS...]")

    p = add("holder", cmd_holder, "show who holds a lease", json_flag)
    p.add_argument("name")

    p = add("leases", cmd_leases, "list held leases", json_flag)
    p.add_argument(
        "--prefix", default="", help="only names starting with this (default: all names)"
    )

    p = add("watch", cmd_watch, "print acquire/release/expiry events until Ctrl-C", json_flag)
    p.add_argument("name", nargs="?", default="", help="lease name (default: all)")

    add("status", cmd_status, "show the cluster's nodes, roles and health", json_flag)

    p = add("transfer", cmd_transfer, "move leadership to another node")
    p.add_argument("--to", default=None, metavar="ID", help="target node (default: best follower)")

    from raftlease.cli_members import register as register_member_commands

    register_member_commands(add, json_flag)

    p = add(
        "probe",
        cmd_probe,
        "acquire, renew, check the token and release a canary lease; print each step's "
        "latency; exit 1 with one error line on failure",
        json_flag,
    )
    p.add_argument("--name", default="canary", help="lease name to use (default canary)")
    p.add_argument(
        "--ttl",
        type=parse_duration_arg,
        default=2.0,
        metavar="DURATION",
        help="the canary lease's TTL, 1s..1h (default 2s)",
    )
    p.add_argument(
        "--wait",
        type=parse_duration_arg,
        default=5.0,
        metavar="DURATION",
        help="if another probe holds the name, wait this long for it (default 5s)",
    )
    p.add_argument("--holder", default=None, help="holder identity (default HOSTNAME:PID)")
    p = add(
        "certs",
        cmd_certs,
        "write a development CA and node/client certificates for TLS (docs/security.md)",
    )
    p.add_argument("dir", metavar="DIR", help="directory to write them to (created 0700)")
    p.add_argument("--nodes", required=True, metavar="ID,...", help="node ids, e.g. n1,n2,n3")
    p.add_argument("--clients", default=None, metavar="NAME,...", help="client identities")
    p.add_argument(
        "--hosts",
        default=None,
        metavar="HOST,...",
        help="DNS names / IPs the nodes are reached at, besides localhost, 127.0.0.1 and ::1",
    )
    _show_serve_defaults(sub.choices["serve"])
    return parser


def _show_serve_defaults(serve: argparse.ArgumentParser) -> None:
    """Help shows every serve option's default: from its line in config_file.SERVE_SETTINGS,
    where its own help text does not say it."""
    from raftlease.config_file import serve_options

    for option in serve_options(serve):
        text = option.action.help or ""
        if option.doc is not None and "default" not in text and "required" not in text:
            option.action.help = f"{text} (default {option.doc.default})".lstrip()


def _split_run_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``run NAME [opts] -- CMD ARGS`` at the first ``--`` (argparse would eat it)."""
    if "--" in argv:
        cut = argv.index("--")
        if "run" in argv[:cut]:
            return argv[:cut], argv[cut + 1 :]
    return argv, None


def _check_durations(args: argparse.Namespace) -> None:
    """Refuse a --ttl or --wait the server would refuse, in seconds as the user typed them
    (the server's answer speaks the wire's milliseconds: ``ttl_ms=0 ... 1000 ms``)."""
    from raftlease.client._values import TTL_BOUNDS_S, WAIT_BOUNDS_S, bound_problem

    command = getattr(args, "command_name", None)
    checks: list[tuple[str, float | None, tuple[float, float]]] = []
    if command in ("acquire", "run", "probe"):
        checks.append(("--ttl", args.ttl, TTL_BOUNDS_S))
    if command in ("acquire", "probe"):  # run's --wait is its own total, not one queue wait
        checks.append(("--wait", args.wait, WAIT_BOUNDS_S))
    for flag, value, bounds in checks:
        problem = None if value is None else bound_problem(flag, value, bounds)
        if problem is not None:
            raise UsageError(problem)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args_list, command = _split_run_command(args_list)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
        if command is not None:
            if args.command:
                raise UsageError(f"unexpected arguments before '--': {' '.join(args.command)}")
            args.command = command
        if getattr(args, "command", None) and args.command[0] == "--":
            args.command = args.command[1:]
        if argv is None and args.command_name not in ("serve", "cluster"):
            # grpc's own INFO lines (a refused TLS handshake, per attempt) would break the
            # one-error-line rule of client commands; set before grpc is first imported
            # (a real command line only: an embedding process keeps its environment).
            os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        if args.endpoints is not None:
            from raftlease.client._common import parse_endpoints

            args.endpoints = parse_endpoints(args.endpoints)
        _check_durations(args)
        result: int = args.func(args)
        return result
    except UsageError as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RaftLeaseError as err:
        return _fail(str(err))
    except (OSError, ValueError) as err:
        return _fail(f"{type(err).__name__}: {err}" if not str(err) else str(err))


if __name__ == "__main__":
    raise SystemExit(main())
