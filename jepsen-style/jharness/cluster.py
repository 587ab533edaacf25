"""The cluster under test: N real raftlease node processes behind per-directed-link proxies.

Every node gets its own peer map: node A reaches node B at the proxy of link A->B. Clients
use the nodes' real listen addresses (``client_addresses``), so a partition cuts Raft traffic
only, as in a real network where clients may still reach an isolated old leader.

Also here: the status poller (Cluster.Status of every node every 100 ms, into status.jsonl:
the timeline, the term-monotonicity check and the leader-lease check read it; every sample
records the harness time the request was sent, ``t0`` (= ``t``), and answered, ``t1``, and the
node incarnation ``inc``) and the exit monitor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from jharness.proxy import ProxyHub
from jharness.util import HERE, REPO, JsonlWriter, free_ports, now

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
REFUSAL_MARKERS = ("raftlease: error:", "refusing to start", "not a usable raftlease storage")


class NodeProc:
    def __init__(self, cluster: Cluster, node_id: str, port: int) -> None:
        self.cluster = cluster
        self.id = node_id
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.dir = cluster.run_dir / "nodes" / node_id
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "node.log"
        self.cfg_path = self.dir / "config.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "down"  # up | down | paused | refused
        self.expect_exit = False
        self.failpoints = ""
        # RAFTLEASE_TRANSPORT_FAULTS of the running incarnation (kept across restarts until a
        # start passes transport_faults="")
        self.transport_faults = ""
        self.starts = 0
        self.faketime_file = self.dir / "faketime.txt"
        self.env_extra: dict[str, str] = {}
        self.log_offset = 0  # where the current incarnation's output starts in node.log

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(
        self,
        run_dir: Path,
        *,
        seed: int,
        history: JsonlWriter,
        n: int = 3,
        overrides: dict[str, Any] | None = None,
        node_env: dict[str, dict[str, str]] | None = None,
        faketime_nodes: tuple[str, ...] = (),
    ) -> None:
        self.run_dir = run_dir
        self.history = history
        self.ids = [f"n{i + 1}" for i in range(n)]
        ports = free_ports(n + n * (n - 1))
        self.nodes = {nid: NodeProc(self, nid, ports[i]) for i, nid in enumerate(self.ids)}
        self.proxies = ProxyHub(seed)
        self.overrides = {"tick_s": 0.02, **(overrides or {})}
        self.tick_s = float(self.overrides["tick_s"])
        self.e_max = self.tick_s * int(self.overrides.get("election_ticks_max", 20))
        self.cluster_id = f"jepsen-{seed}"
        k = n
        self.peer_maps: dict[str, dict[str, str]] = {nid: {} for nid in self.ids}
        for a in self.ids:
            for b in self.ids:
                if a == b:
                    self.peer_maps[a][b] = self.nodes[a].addr
                    continue
                pport = ports[k]
                k += 1
                self.proxies.add_link(a, b, pport, self.nodes[b].port)
                self.peer_maps[a][b] = f"127.0.0.1:{pport}"
        self.client_addresses = {nid: self.nodes[nid].addr for nid in self.ids}
        for nid, node in self.nodes.items():
            node.dir.mkdir(parents=True, exist_ok=True)
            node.env_extra = dict((node_env or {}).get(nid, {}))
            if nid in faketime_nodes:
                node.faketime_file.write_text("+0\n")
                node.env_extra.update(
                    {
                        "LD_PRELOAD": FAKETIME_LIB,
                        "FAKETIME_TIMESTAMP_FILE": str(node.faketime_file),
                        "FAKETIME_CACHE_DURATION": "1",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                        # libfaketime's "monotonic fix" (auto-enabled on this glibc) makes
                        # pthread_cond_timedwait on a CLOCK_MONOTONIC condvar time out early
                        # or late. CPython's GIL waits on exactly that, so with the fix on two
                        # threads contending for the GIL spin at 100 % CPU (seen: two nodes'
                        # main + fsync threads, both cores, ~0.3 s every few s) and starve
                        # the cluster into leader flaps: a tool artefact, NEEDS.md O2.
                        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
                    }
                )
            node.cfg_path.write_text(
                json.dumps(
                    {
                        "node_id": nid,
                        "listen": node.addr,
                        "peers": self.peer_maps[nid],
                        "client_addresses": self.client_addresses,
                        "data_dir": str(node.data_dir),
                        "cluster_id": self.cluster_id,
                        "overrides": self.overrides,
                    },
                    indent=1,
                )
            )
        self.status_log = JsonlWriter(run_dir / "status.jsonl")
        self.latest: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self.exits: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    # -- events -----------------------------------------------------------------------------
    def event(self, f: str, **value: Any) -> None:
        self.history.write({"t": now(), "process": "cluster", "type": "info", "f": f, **value})

    @property
    def endpoints(self) -> list[str]:
        return [self.nodes[n].addr for n in self.ids]

    # -- process control --------------------------------------------------------------------
    def start_node(
        self,
        nid: str,
        *,
        failpoints: str = "",
        env: dict[str, str] | None = None,
        transport_faults: str | None = None,
    ) -> None:
        """Start ``nid``. ``failpoints`` arm this incarnation only; ``transport_faults``
        (``"dup=P;reorder=P;drop=P"``, read by the server at start) stays set for later
        restarts until a start passes ``""``; ``None`` keeps the node's current setting."""
        node = self.nodes[nid]
        with self._lock:
            if node.alive():
                return
            e = dict(os.environ)
            e.pop("RAFTLEASE_FAILPOINTS", None)
            e.pop("RAFTLEASE_CLOCK_RATE", None)
            e.pop("RAFTLEASE_TRANSPORT_FAULTS", None)
            e.update({"PYTHONUNBUFFERED": "1", "RAFTLEASE_LOG_LEVEL": "INFO"})
            e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
            e.update(node.env_extra)
            if env:
                e.update(env)
            if failpoints:
                e["RAFTLEASE_FAILPOINTS"] = failpoints
            if transport_faults is not None:
                node.transport_faults = transport_faults
            if node.transport_faults:
                e["RAFTLEASE_TRANSPORT_FAULTS"] = node.transport_faults
            node.failpoints = failpoints
            node.starts += 1
            tf = f" transport_faults={node.transport_faults!r}" if node.transport_faults else ""
            with open(node.log_path, "ab") as lf:
                lf.write(
                    f"=== harness: start #{node.starts} of {nid} at t={now():.3f} "
                    f"failpoints={failpoints!r}{tf} ===\n".encode()
                )
                node.log_offset = lf.tell()
            logf = open(node.log_path, "ab")  # noqa: SIM115 - owned by the child
            node.proc = subprocess.Popen(
                [sys.executable, str(HERE / "node_launcher.py"), str(node.cfg_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=e,
                cwd=str(node.dir),
                start_new_session=True,
            )
            logf.close()
            node.state = "up"
            node.expect_exit = False
        self.event(
            "node-start",
            node=nid,
            pid=node.pid,
            inc=node.starts,
            failpoints=failpoints,
            transport_faults=node.transport_faults,
        )

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[nid]
        with self._lock:
            if not node.alive():
                node.state = "down" if node.state != "refused" else "refused"
                return
            node.expect_exit = True
            # before the signal: the leader-lease check ends this incarnation's beliefs here
            t_signal = now()
            if sig == signal.SIGTERM:
                with open(node.log_path, "ab") as lf:
                    lf.write(f"=== harness: SIGTERM to {nid} at t={t_signal:.3f} ===\n".encode())
            if node.state == "paused":
                os.kill(node.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            os.kill(node.proc.pid, sig)  # type: ignore[union-attr]
        try:
            node.proc.wait(5.0)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            os.kill(node.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            node.proc.wait(5.0)  # type: ignore[union-attr]
        node.state = "down"
        self.event(
            "node-stop",
            node=nid,
            inc=node.starts,
            signal=signal.Signals(sig).name,
            t_signal=t_signal,
        )

    def stop_node(self, nid: str) -> None:
        """Graceful stop (SIGTERM), as an operator restart would."""
        self.kill(nid, signal.SIGTERM)

    def pause(self, nid: str) -> None:
        node = self.nodes[nid]
        with self._lock:
            if node.alive() and node.state == "up":
                os.kill(node.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
                node.state = "paused"

    def resume(self, nid: str) -> None:
        node = self.nodes[nid]
        with self._lock:
            if node.alive() and node.state == "paused":
                os.kill(node.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
                node.state = "up"

    def set_wall_offset(self, nid: str, spec: str) -> None:
        self.nodes[nid].faketime_file.write_text(spec + "\n")

    # -- observation ------------------------------------------------------------------------
    def start_background(self) -> None:
        for nid in self.ids:
            t = threading.Thread(target=self._poll, args=(nid,), daemon=True, name=f"poll-{nid}")
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._monitor, daemon=True, name="exit-monitor")
        t.start()
        self._threads.append(t)

    def _poll(self, nid: str) -> None:
        from raftlease.v1 import cluster_pb2, cluster_pb2_grpc

        node = self.nodes[nid]
        channel = grpc.insecure_channel(node.addr)
        stub = cluster_pb2_grpc.ClusterStub(channel)
        while not self._stop.is_set():
            inc = node.starts
            t0 = now()
            # t = t0: when the request was sent; t1: when the answer arrived (both harness
            # CLOCK_MONOTONIC). The node answered at some instant inside [t0, t1].
            rec: dict[str, Any] = {"t": t0, "t0": t0, "node": nid, "state": node.state, "inc": inc}
            if node.state in ("up",) and node.alive():
                try:
                    r = stub.Status(cluster_pb2.StatusRequest(), timeout=0.3)
                    t1 = now()
                    me = next((x for x in r.nodes if x.id == nid), None)
                    rec.update(
                        ok=True,
                        t1=t1,
                        role=me.role if me else "unknown",
                        term=r.term,
                        leader=r.leader_id or None,
                        commit=me.commit_index if me else None,
                        applied=me.applied_index if me else None,
                        lease_valid=bool(me.lease_valid) if me else None,
                        lease_remaining_ms=int(me.lease_remaining_ms) if me else None,
                    )
                except grpc.RpcError as err:
                    rec.update(ok=False, err=err.code().name)
            else:
                rec["ok"] = False
            self.latest[nid] = rec
            self.status_log.write(rec)
            self._stop.wait(max(0.0, 0.1 - (now() - t0)))
        channel.close()

    def _monitor(self) -> None:
        while not self._stop.is_set():
            for nid, node in self.nodes.items():
                p = node.proc
                if p is None or node.state in ("down", "refused"):
                    continue
                code = p.poll()
                if code is None or node.expect_exit:
                    continue
                tail = self.log_tail(nid)
                refused = code == 1 and any(m in tail for m in REFUSAL_MARKERS)
                fp = code == 137 and "failpoint" in tail
                node.state = "refused" if refused else "down"
                rec = {
                    "node": nid,
                    "inc": node.starts,
                    "code": code,
                    "refused": refused,
                    "failpoint": fp,
                }
                if not refused and not fp:
                    rec["unexpected"] = True
                self.exits.append({"t": now(), **rec})
                self.event("node-exit", **rec)
            self._stop.wait(0.05)

    def log_tail(self, nid: str, n: int = 4000) -> str:
        node = self.nodes[nid]
        try:
            with open(node.log_path, "rb") as f:
                f.seek(node.log_offset)
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def fresh(self, max_age: float = 0.6) -> dict[str, dict[str, Any]]:
        t = now()
        return {k: v for k, v in self.latest.items() if v.get("ok") and t - v["t"] <= max_age}

    def leader(self) -> str | None:
        best = None
        for nid, s in self.fresh().items():
            if (
                s.get("role") == "leader"
                and self.nodes[nid].state == "up"
                and (best is None or s["term"] > self.latest[best]["term"])
            ):
                best = nid
        return best

    def wait_leader(self, timeout: float) -> str | None:
        deadline = now() + timeout
        while now() < deadline:
            lead = self.leader()
            if lead is not None:
                return lead
            time.sleep(0.05)
        return None

    def up_ids(self) -> list[str]:
        return [n for n in self.ids if self.nodes[n].state == "up" and self.nodes[n].alive()]

    # -- teardown ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        for nid in self.ids:
            node = self.nodes[nid]
            if node.alive():
                try:
                    self.kill(nid, signal.SIGTERM)
                except Exception:
                    self.kill(nid)
        self._stop.set()
        for t in self._threads:
            t.join(1.0)
        self.proxies.close()
        self.status_log.close()

    def wipe(self, nid: str) -> None:
        shutil.rmtree(self.nodes[nid].data_dir, ignore_errors=True)
