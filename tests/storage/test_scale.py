"""A box that holds a million objects stays healthy while it loads and while objects arrive: every `/status`
poll answers within the control plane's 1 s timeout, from the moment the admin port is up (the master's
catalog still loading in the background) through an import through the running box (the fill's path into the
store: batches through the storage owner). A benchmark-sized run: `make bench`, not `make test`."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from loadtest.bench_store import key_of, write_sources
from loadtest.boxes import OCA, kill_box, start_box, write_box_config
from oca.storage.index import Index, Row, index_path

OBJECTS = 1_000_000
ARRIVING = 500
TIMEOUT = 1.0  # the control plane's health poll timeout


def _status(port: int) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/status")
        body: dict[str, object] = json.loads(conn.getresponse().read())
        return body
    finally:
        conn.close()


@pytest.mark.bench
def test_a_box_of_a_million_objects_answers_every_status_poll_while_it_loads_and_fills(tmp_path: Path) -> None:
    workdir = str(tmp_path)
    hdd = tmp_path / "hdd"
    config_path = write_box_config(workdir, storage={
        "tiers": [{"name": "hdd", "path": str(hdd), "capacity": "1TiB"}],
        "health_check_interval": "5s", "access_flush_interval": "1s"})
    # the million objects' index rows, written directly: health depends on the catalog, not on the files (writing
    # a million files takes tens of minutes on a test machine); the objects that arrive are real
    (hdd / "objects").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    batches = ([Row(f"titles/held/{i}", "hdd", 4096, f"{i:032x}", 1.7e9 + i, 1.7e9 + i, False, False).values()
                for i in range(first, min(first + 10_000, OBJECTS))] for first in range(0, OBJECTS, 10_000))
    Index.create(index_path(str(state)), batches).close(clean=True)
    src = tmp_path / "src"
    write_sources(str(src), 0, ARRIVING, 4096)

    polls: list[float] = []
    failures: list[str] = []
    up = threading.Event()
    done = threading.Event()
    box = start_box(config_path, workdir, wait=False, session=True, timeout=600)

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                _status(box.admin_port)
                polls.append(time.perf_counter() - started)
                up.set()
            except OSError as e:
                if up.is_set():  # before the admin port is up, a refused connection is the box starting
                    failures.append(f"{e!r} after {time.perf_counter() - started:.2f}s")
            time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert up.wait(120), f"the admin port never answered:\n{box.log()}"
        subprocess.run([OCA, "cache", "import", "--config", config_path, str(src)], check=True, capture_output=True,
                       timeout=600)
        deadline = time.monotonic() + 600
        while _status(box.admin_port).get("objects") != OBJECTS + ARRIVING:
            assert time.monotonic() < deadline, "the master never counted every object"
            time.sleep(0.5)
        assert box.get("/" + key_of(ARRIVING - 1))[0] == 200
    finally:
        done.set()
        poller.join()
        kill_box(box)
    assert not failures, failures
    assert polls and max(polls) < TIMEOUT, sorted(polls)[-5:]
    assert os.path.exists(index_path(str(state)))
