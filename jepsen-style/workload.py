"""One single-threaded workload client: ``python workload.py CONFIG.json``.

Contends for a few lease names through the public ``raftlease.LeaseClient`` and writes to the
harness's fenced resource while holding. Every operation goes to its own JSONL history as
invoke / ok / fail / info events stamped with the reference clock (CLOCK_MONOTONIC, shared by
all processes here). Besides the operations it records, per held lease, the client's own
BELIEF interval ``[ack received, end)`` where ``end = min(valid_until, lost, release call)``
and ``valid_until = send time + ttl*(1-rho)/(1+rho)`` as kept by the client library (extended
by every successful keepalive). The harness's ME checker needs nothing else.

Knobs (config keys):
  clock_rate   this process's monotonic clock runs at this rate (patches time.monotonic, so
               the client library sees a skewed clock); history times stay on the reference
               clock and belief ends are converted back to it.
  broken       "" (correct), "hold-past" (stop keepalives and keep acting as holder until
               1.5*TTL after the ack: a client that holds on past its lease), or
               "ignore-margin" (validity = ack time + full TTL after each renewal, ignoring the
               drift margin, the send-time rule and the lost signal). The teeth tests use these.
  gate_file    if this file exists when the client has checked validity and is about to write,
               the client removes it, logs "pause-gate" and SIGSTOPs itself; the harness
               SIGCONTs it later (row 10: pause between the validity check and the write).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

REF = time.monotonic  # the real CLOCK_MONOTONIC, kept before any patching


def ref() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class History:
    def __init__(self, path: str, process: str) -> None:
        self.f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.process = process

    def __call__(self, typ: str, f: str, **kw: Any) -> float:
        t = ref()
        rec = {"t": t, "process": self.process, "type": typ, "f": f, **kw}
        self.f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        return t


class Resource:
    """Client of the harness's fenced resource (line JSON over TCP)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.rf: Any = None

    def write(self, req: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            self.rf = self.sock.makefile("rb")
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall((json.dumps(req) + "\n").encode())
            line = self.rf.readline()
            if not line:
                raise OSError("resource closed the connection")
            return json.loads(line)  # type: ignore[no-any-return]
        except Exception:
            self.sock.close()
            self.sock = None
            raise


def install_skewed_clock(rate: float) -> tuple[float, float]:
    base = REF()

    def skewed() -> float:
        return base + (REF() - base) * rate

    time.monotonic = skewed  # main() points raftlease.clock.boot_monotonic at it
    return base, rate


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    cid: str = cfg["id"]
    rng = random.Random(cfg["seed"])
    hist = History(cfg["history"], cid)
    rate = float(cfg.get("clock_rate") or 1.0)
    base, _ = install_skewed_clock(rate) if rate != 1.0 else (REF(), 1.0)

    def to_ref(local: float) -> float:
        return base + (local - base) / rate if rate != 1.0 else local

    sys.path.insert(0, cfg["repo"])
    import raftlease.clock

    # The library measures validity on raftlease.clock.boot_monotonic (CLOCK_BOOTTIME); point
    # it at this process's (maybe skewed) reference clock, so the skew reaches the library and
    # valid_until is on the clock to_ref converts from.
    raftlease.clock.boot_monotonic = time.monotonic
    from raftlease import LeaseClient
    from raftlease.client import ClusterUnavailable, LeaseHeld
    from raftlease.errors import RaftLeaseError

    names: list[str] = cfg["names"]
    ttl: float = cfg["ttl"]
    broken: str = cfg.get("broken", "")
    rho = 0.01
    gate = Path(cfg["gate_file"]) if cfg.get("gate_file") else None
    res = Resource(cfg["resource_port"])
    deadline = ref() + cfg["duration"]
    stop_file = Path(cfg["stop_file"]) if cfg.get("stop_file") else None
    wseq = 0
    abandoned: list[dict[str, Any]] = []
    hist("info", "start", pid=os.getpid(), clock_rate=rate, broken=broken)
    client = LeaseClient(cfg["endpoints"], timeout=cfg.get("client_timeout", 2.0), max_drift=rho)

    def write(name: str, token: int) -> None:
        nonlocal wseq
        wseq += 1
        hist("invoke", "write", name=name, token=token, wseq=wseq)
        try:
            r = res.write({"name": name, "token": token, "client": cid, "seq": wseq})
        except Exception as e:
            hist("info", "write", name=name, token=token, wseq=wseq, error=str(e))
            return
        hist(
            "ok" if r.get("accepted") else "fail",
            "write",
            name=name,
            token=token,
            wseq=wseq,
            max_seen=r.get("max_seen"),
        )

    try:
        while ref() < deadline and not (stop_file is not None and stop_file.exists()):
            name = rng.choice(names)
            if rng.random() < 0.12:
                hist("invoke", "read", name=name)
                try:
                    info = client.holder(name)
                    hist(
                        "ok",
                        "read",
                        name=name,
                        token=None if info is None else info.fencing_token,
                        holder=None if info is None else info.holder,
                    )
                except ClusterUnavailable as e:
                    hist("fail", "read", name=name, error=str(e)[:200])
                except RaftLeaseError as e:
                    hist("fail", "read", name=name, error=f"{type(e).__name__}: {e}"[:200])
                time.sleep(rng.uniform(0.02, 0.1))
                continue
            wait = rng.choice([0.0, rng.uniform(0.2, 1.0), rng.uniform(1.0, 2.0 * ttl)])
            lost_at: list[float] = []
            t_inv = hist("invoke", "acquire", name=name, wait=round(wait, 3), ttl=ttl)
            try:
                lease = client.acquire(
                    name,
                    ttl=ttl,
                    wait=wait,
                    holder=cid,
                    on_lost=lambda _l, la=lost_at: la.append(ref()),
                )
            except LeaseHeld as e:
                hist(
                    "fail",
                    "acquire",
                    name=name,
                    error="held",
                    by=getattr(e, "holder", None),
                    by_token=getattr(e, "fencing_token", None),
                )
                time.sleep(rng.uniform(0.02, 0.15))
                continue
            except ClusterUnavailable as e:
                # indeterminate: a grant may exist that we never learned of (no belief)
                hist("info", "acquire", name=name, error=str(e)[:200])
                time.sleep(rng.uniform(0.05, 0.2))
                continue
            except RaftLeaseError as e:
                hist("info", "acquire", name=name, error=f"{type(e).__name__}: {e}"[:200])
                time.sleep(rng.uniform(0.05, 0.2))
                continue
            t_ack = ref()
            token = lease.fencing_token
            hist(
                "ok",
                "acquire",
                name=name,
                token=token,
                lease_id=lease.lease_id,
                valid_until=to_ref(lease.valid_until),
                latency=t_ack - t_inv,
            )
            broken_until = t_ack + ttl  # ignore-margin: ack + full TTL
            if broken == "hold-past":
                lease.stop_keepalive()
                broken_until = t_ack + 1.5 * ttl

            def believes(lease: Any = lease, t_ack: float = t_ack, t_inv: float = t_inv) -> bool:
                nonlocal broken_until
                if broken == "hold-past":
                    return ref() < broken_until
                if broken == "ignore-margin":
                    # recompute "last renewal ack + full TTL" from the library's deadline
                    eff = ttl * (1 - rho) / (1 + rho)
                    last_send = to_ref(lease.valid_until) - eff
                    broken_until = max(broken_until, last_send + (t_ack - t_inv) + ttl)
                    return ref() < broken_until
                return lease.is_valid()

            end_reason = "release"
            for _ in range(rng.randint(1, 4)):
                r = rng.random()
                if r < 0.7:
                    delay = rng.uniform(0.02, 0.3)
                elif r < 0.9:
                    delay = rng.uniform(0.3, 1.0) * ttl
                else:
                    delay = rng.uniform(1.0, 1.6) * ttl  # past the TTL (keepalive should cover)
                time.sleep(delay)
                t_chk = ref()
                ok = believes()
                hist(
                    "info",
                    "check",
                    name=name,
                    token=token,
                    valid=ok,
                    t_check=t_chk,
                    valid_until=to_ref(lease.valid_until),
                )
                if not ok:
                    end_reason = "lost"
                    break
                if gate is not None and gate.exists():
                    try:
                        gate.unlink()
                        hist(
                            "info",
                            "pause-gate",
                            name=name,
                            token=token,
                            valid_until=to_ref(lease.valid_until),
                        )
                        os.kill(os.getpid(), signal.SIGSTOP)
                        hist("info", "resumed", name=name, token=token)
                    except FileNotFoundError:
                        pass
                write(name, token)
            if broken == "hold-past":
                # keep acting as the holder until our (wrong) deadline, writing as we go
                while ref() < broken_until - 0.05:
                    time.sleep(min(0.2, max(0.0, broken_until - ref())))
                    if ref() < broken_until:
                        write(name, token)
                end_reason = "hold-past"
            elif end_reason == "release" and rng.random() < 0.25:
                end_reason = "abandon"
                lease.stop_keepalive()  # it will expire on the server; belief ends on its own
            t_rel = None
            if end_reason in ("release", "lost"):
                t_rel = hist("invoke", "release", name=name, token=token, lease_id=lease.lease_id)
                try:
                    lease.release()
                    hist("ok", "release", name=name, token=token, lease_id=lease.lease_id)
                except RaftLeaseError as e:
                    hist(
                        "info",
                        "release",
                        name=name,
                        token=token,
                        lease_id=lease.lease_id,
                        error=str(e)[:200],
                    )
            pending = {
                "name": name,
                "token": token,
                "start": t_ack,
                "lease": lease,
                "lost_at": lost_at,
                "t_rel": t_rel,
                "reason": end_reason,
                "broken_until": broken_until,
            }
            if end_reason == "abandon":
                abandoned.append(pending)  # final once lost fires, or at close (releases it)
            else:
                finish_belief(hist, pending, to_ref, broken)
            for p in [p for p in abandoned if p["lost_at"]]:
                abandoned.remove(p)
                finish_belief(hist, p, to_ref, broken)
            time.sleep(rng.uniform(0.0, 0.1))
    finally:
        t_close = ref()  # close() releases every lease still held: belief ends here at latest
        for p in abandoned:
            if not p["lost_at"]:
                p["t_rel"] = t_close
        with contextlib.suppress(Exception):
            client.close()
        for p in abandoned:
            finish_belief(hist, p, to_ref, broken)
        hist("info", "stop", t_close=t_close)


def finish_belief(hist: History, p: dict[str, Any], to_ref: Any, broken: str) -> None:
    """Record the belief interval of one grant, in reference time."""
    lease = p["lease"]
    vu = to_ref(lease.valid_until)
    ends = [vu]
    if p["lost_at"]:
        ends.append(p["lost_at"][0])
    if p["t_rel"] is not None:
        ends.append(p["t_rel"])
    end = min(ends)
    if broken in ("hold-past", "ignore-margin"):
        end = p["broken_until"] if p["t_rel"] is None else min(p["broken_until"], p["t_rel"])
        if broken == "ignore-margin":
            end = max(end, vu)
    hist(
        "info",
        "belief",
        name=p["name"],
        token=p["token"],
        start=p["start"],
        end=end,
        valid_until=vu,
        reason=p["reason"],
        broken=broken or None,
    )


if __name__ == "__main__":
    main()
