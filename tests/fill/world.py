"""A fill world on loopback for the tests and the benchmark: an origin, a real control plane, real boxes.

Titles are synthetic HLS/DASH packages (tests/control/fixtures.py) with bigger segments, put on the origin and
ingested into the control plane's catalog (the record built locally with the catalog's own ingest, as the
CLI does, then posted), so every file has its real size and xxh3 digest.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control.catalog import ingest_source, title_to_json
from tests.conftest import OCA, Box, free_port, start_box, write_box_config
from tests.control.fixtures import package_files, write_control_config, write_package
from tests.control.test_live import TOKEN, Control
from tests.upstream.origin import Origin

BOX_TOKEN = "box-secret"


def title_files(index: int, segment_bytes: int) -> dict[str, bytes]:
    """A package whose segments are `segment_bytes` long and differ from title to title."""
    files = package_files()
    for rel in list(files):
        if "/seg_" in rel:
            seed = f"{index}:{rel}".encode()
            files[rel] = (seed * (segment_bytes // len(seed) + 1))[:segment_bytes]
    return files


@dataclass
class World:
    root: str
    origin: Origin
    titles: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> title JSON (files with digests)
    boxes: dict[str, Box] = field(default_factory=dict)
    control: Control | None = None
    box_ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)  # box -> site

    @property
    def token_file(self) -> str:
        return os.path.join(self.root, "box.token")

    def make_titles(self, count: int, segment_bytes: int, missing_at_origin: tuple[str, ...] = ()) -> None:
        """Write `count` packages, serve them from the origin (but the keys in `missing_at_origin`)."""
        async def ingest_all() -> None:
            for i in range(count):
                title_id = f"{1000 + i}"
                root = os.path.join(self.root, "packages", title_id)
                files = title_files(i, segment_bytes)
                write_package(root, files)
                for rel, data in files.items():
                    key = f"titles/{title_id}/{rel}"
                    if key not in missing_at_origin:
                        self.origin.add(key, data)
                ingested = await ingest_source(root, title_id, now=time.time())
                self.titles[title_id] = {"title": title_to_json(ingested.title), "mpd": ingested.mpd}

        asyncio.run(ingest_all())

    def catalog(self) -> dict[str, tuple[int, str]]:
        """key -> (size, digest) of every catalogued file."""
        return {f["path"]: (f["size"], f["digest"]) for t in self.titles.values() for f in t["title"]["files"]}

    def plan_boxes(self, layout: dict[str, list[str]]) -> None:
        """Choose ports for boxes, site -> box ids (boxes must know their peers' URLs before they start)."""
        with open(self.token_file, "w", encoding="utf-8") as fh:
            fh.write(BOX_TOKEN + "\n")
        for site, ids in layout.items():
            for box in ids:
                self.box_ports[box] = (free_port(), free_port())
                self.sites[box] = site

    def start_control(self, parents: dict[str, str] | None = None, **sections: Any) -> Control:
        port = free_port()
        with open(os.path.join(self.root, "operator.token"), "w", encoding="utf-8") as fh:
            fh.write(TOKEN + "\n")
        sites = [{"id": s, "latitude": 52.0, "longitude": 4.9, "country": "NL", "parent": (parents or {}).get(s)}
                 for s in sorted(set(self.sites.values()))]
        boxes = [{"id": b, "site": self.sites[b], "data_url": f"http://127.0.0.1:{self.box_ports[b][0]}",
                  "admin_url": f"http://127.0.0.1:{self.box_ports[b][1]}", "egress_capacity": "1Gbps"}
                 for b in sorted(self.box_ports)]
        settings: dict[str, Any] = {
            "health": {"interval": "200ms", "timeout": "500ms", "down_after": 2, "up_after": 1},
            "auth": {"operator_token_file": "operator.token", "box_token_file": "box.token"},
            "fill": {"window": "always", "replication": 2, "head_share": 0.5},
        }
        settings.update(sections)
        path = write_control_config(self.root, [], listen=f"127.0.0.1:{port}", origin_url=self.origin.url,
                                    fleet={"origin_url": self.origin.url, "sites": sites, "boxes": boxes},
                                    **settings)
        self.control = Control(path, port, self.root)
        self.control.start()
        for title_id, record in self.titles.items():
            self.control.get(f"/v1/catalog/{title_id}", method="POST", body=record)
        return self.control

    def box_config(self, box: str, **overrides: Any) -> str:
        workdir = os.path.join(self.root, box)
        os.makedirs(workdir, exist_ok=True)
        data_port, admin_port = self.box_ports[box]
        peers = [{"name": b, "url": f"http://127.0.0.1:{self.box_ports[b][0]}", "kind": "peer"}
                 for b in sorted(self.box_ports) if b != box and self.sites[b] == self.sites[box]]
        assert self.control is not None
        sections: dict[str, Any] = {
            "box": {"id": box, "site": self.sites[box]},
            "server": {"listen": f"127.0.0.1:{data_port}", "workers": 1, "shutdown_timeout": "5s"},
            "admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": self.token_file},
            "fetch": {"sources": [*peers, {"name": "origin", "url": self.origin.url, "kind": "origin"}],
                      "peer_credential_file": self.token_file},
            "control": {"url": self.control.url, "credential_file": self.token_file, "poll_interval": "1s"},
        }
        for name, value in overrides.items():
            if isinstance(value, dict) and isinstance(sections.get(name), dict):
                sections[name] = {**sections[name], **value}
            else:
                sections[name] = value
        return write_box_config(workdir, **sections)

    def start_box(self, box: str, **overrides: Any) -> Box:
        path = self.box_config(box, **overrides)
        started = start_box(path, os.path.dirname(path))
        self.boxes[box] = started
        return started

    def restart_box(self, box: str) -> Box:
        old = self.boxes[box]
        started = start_box(old.config_path, old.workdir)
        self.boxes[box] = started
        return started

    def fill(self, box: str, *args: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
        """`oca fill run --json` for the box: (exit code, summary JSON or {}, stderr)."""
        result = subprocess.run([OCA, "fill", "run", "--config", self.boxes[box].config_path, "--json", *args],
                                capture_output=True, text=True, timeout=timeout)
        try:
            summary = json.loads(result.stdout) if result.stdout.strip() else {}
        except ValueError:
            summary = {"stdout": result.stdout}
        return result.returncode, summary, result.stderr

    def fill_process(self, box: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([OCA, "fill", "run", "--config", self.boxes[box].config_path, "--json", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for_plan(self, box: str, timeout: float = 20) -> dict[str, Any]:
        assert self.control is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                plan: dict[str, Any] = self.control.get(f"/v1/fill-plans/{box}")
                return plan
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or time.monotonic() > deadline:
                    raise

            time.sleep(0.1)

    def wait_live(self, box: str, title_ids: list[str], timeout: float = 20) -> None:
        """Until the control plane sees every one of these titles live on the box."""
        assert self.control is not None
        wait_until(lambda: all(box in t["live"] for t in self.control.get("/v1/fleet/titles")["titles"]  # type: ignore[union-attr]
                               if t["id"] in title_ids), timeout, f"{box} not live for {title_ids}")

    def inventory(self, box: str) -> dict[str, dict[str, Any]]:
        listing = self.boxes[box].admin("/inventory?prefix=titles/")
        return {o["key"]: o for o in listing["objects"]}

    def stop(self) -> None:
        from tests.conftest import kill_box

        for started in self.boxes.values():
            kill_box(started)
        if self.control is not None:
            self.control.kill()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
