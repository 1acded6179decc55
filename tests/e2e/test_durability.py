"""Every write answered 2xx survives SIGKILL of the server in the middle of a write load."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from tests.support import ROOT, ServerProcess, wait_until

THREADS = 8
IDS_PER_THREAD = 10


def body_for(thread: int, seq: int) -> dict[str, object]:
    return {"thread": thread, "seq": seq, "payload": f"{thread}-{seq}-" + "x" * (seq % 50)}


def test_acknowledged_writes_survive_sigkill(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    acked: dict[str, int] = {}  # resource id -> seq of its last acknowledged write
    lock = threading.Lock()
    stop = threading.Event()

    def load(thread: int) -> None:
        with httpx.Client(base_url=server.url, auth=ROOT, timeout=5.0) as http:
            seq = 0
            while not stop.is_set():
                id_ = f"t{thread}-{seq % IDS_PER_THREAD}"
                try:
                    response = http.put(f"/Patient/{id_}", json=body_for(thread, seq))
                except httpx.HTTPError:
                    # Never acknowledged: the server was killed, or (a loaded machine) the answer was slow.
                    if stop.is_set():
                        return
                    continue
                if response.status_code in (200, 201):
                    with lock:
                        acked[id_] = seq
                seq += 1

    workers = [threading.Thread(target=load, args=(n,)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(acked) == THREADS * IDS_PER_THREAD and sum(acked.values()) > 2000, timeout=60)
        server.kill()  # SIGKILL while the threads are still writing
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    with lock:
        expected = dict(acked)

    restarted = server_factory()
    with restarted.client(auth=ROOT) as http:
        for id_, seq in expected.items():
            response = http.get(f"/Patient/{id_}")
            assert response.status_code == 200, id_
            stored = response.json()
            thread = int(id_[1:].split("-")[0])
            # A write in flight at the kill may have committed without its answer arriving: newer is fine.
            assert stored["seq"] >= seq, (id_, stored["seq"], seq)
            assert {k: stored[k] for k in ("thread", "seq", "payload")} == body_for(thread, stored["seq"])
