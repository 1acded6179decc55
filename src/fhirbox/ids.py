"""Cheap unique ids for what the server names itself (request ids, AuditEvents): a random prefix
drawn once per process and a counter. Unique across processes and restarts (64 random bits per
process), without a CSPRNG call per id; never a secret, so nothing relies on them being unguessable.
The counter is fixed-width hex, so one process's ids sort in the order it drew them: AuditEvents are
stored by id, and ids that only grow are appended at the end of the table's key instead of all over it."""

from __future__ import annotations

import itertools
import secrets


class UniqueIds:
    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):010x}"
