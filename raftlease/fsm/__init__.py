"""The replicated lease table: commands, limits, and the deterministic state machine.

Pure and deterministic (no clock, no I/O, no randomness, no protobuf, no asyncio), so every
replica that applies the same committed entries reaches byte-identical state.
Imports: stdlib, :mod:`raftlease.types`, :mod:`raftlease.errors` only.
"""

from raftlease.fsm.commands import (
    Acquire,
    CancelWait,
    Command,
    Expire,
    Release,
    decode_command,
    encode_command,
)
from raftlease.fsm.leases import (
    ApplyResult,
    Expired,
    Granted,
    Held,
    LeaseEvent,
    LeaseRecord,
    LeaseTable,
    NotFound,
    Queued,
    Rejected,
    Released,
    WaitCancelled,
    Waiter,
)
from raftlease.fsm.limits import InvalidArgument

__all__ = [
    "Acquire",
    "ApplyResult",
    "CancelWait",
    "Command",
    "Expire",
    "Expired",
    "Granted",
    "Held",
    "InvalidArgument",
    "LeaseEvent",
    "LeaseRecord",
    "LeaseTable",
    "NotFound",
    "Queued",
    "Rejected",
    "Release",
    "Released",
    "WaitCancelled",
    "Waiter",
    "decode_command",
    "encode_command",
]
