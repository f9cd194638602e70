"""Helpers of the control-plane service tests: a synthetic packaged title, control-plane configs, fake boxes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import write_config, write_objects

VARIANTS = [("360p", 800_000, "640x360"), ("720p", 2_500_000, "1280x720"), ("1080p", 5_000_000, "1920x1080")]
SEGMENTS = 3


def _media_playlist() -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:4", "#EXT-X-PLAYLIST-TYPE:VOD",
             '#EXT-X-MAP:URI="init.mp4"']
    for i in range(1, SEGMENTS + 1):
        lines += ["#EXTINF:4.000,", f"seg_{i:05d}.m4s"]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def master_playlist() -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS",
             '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, stereo",LANGUAGE="en",DEFAULT=YES,'
             'AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"']
    for name, bandwidth, resolution in VARIANTS:
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},AVERAGE-BANDWIDTH={bandwidth * 9 // 10},'
                  f'CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION={resolution},FRAME-RATE=25.000,AUDIO="aud"',
                  f"{name}/index.m3u8"]
    return "\n".join([*lines, ""])


def mpd() -> str:
    reps = "\n".join(
        f'      <Representation id="{name}" bandwidth="{bw}" codecs="avc1.4d401f" width="{res.split("x")[0]}" '
        f'height="{res.split("x")[1]}" frameRate="25"/>' for name, bw, res in VARIANTS)
    segs = "\n".join(f'          <SegmentURL media="audio/seg_{i:05d}.m4s"/>' for i in range(1, SEGMENTS + 1))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT12S"
     minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
  <Period id="0">
    <AdaptationSet contentType="video" mimeType="video/mp4" segmentAlignment="true">
      <SegmentTemplate timescale="1000" duration="4000" startNumber="1"
                       initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/seg_$Number%05d$.m4s"/>
{reps}
    </AdaptationSet>
    <AdaptationSet contentType="audio" mimeType="audio/mp4" lang="en">
      <Representation id="audio" bandwidth="128000" codecs="mp4a.40.2" audioSamplingRate="48000">
        <SegmentList timescale="1000" duration="4000">
          <Initialization sourceURL="audio/init.mp4"/>
{segs}
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


def package_files() -> dict[str, bytes]:
    """Relative path -> bytes of a small HLS + DASH package (segments are plain bytes)."""
    files: dict[str, bytes] = {"master.m3u8": master_playlist().encode(), "manifest.mpd": mpd().encode()}
    for n, rendition in enumerate([name for name, _, _ in VARIANTS] + ["audio"]):
        files[f"{rendition}/index.m3u8"] = _media_playlist().encode()
        files[f"{rendition}/init.mp4"] = bytes([n]) * 100
        for i in range(1, SEGMENTS + 1):
            files[f"{rendition}/seg_{i:05d}.m4s"] = bytes([n, i]) * (500 + 10 * i)
    return files


def write_package(root: str, files: dict[str, bytes] | None = None) -> str:
    write_objects(root, files or package_files())
    return root


def write_control_config(workdir: str, boxes: list[dict[str, Any]], *, listen: str = "127.0.0.1:0",
                         origin_url: str = "http://127.0.0.1:9/origin", **sections: Any) -> str:
    """A control.yaml: one site `lab` (coverage 127.0.0.0/8 -> lab), the given boxes, overrides by section."""
    coverage = os.path.join(workdir, "coverage.csv")
    with open(coverage, "w", encoding="utf-8") as fh:
        fh.write("prefix,lat,lon,country\n127.0.0.0/8,52.37,4.90,NL\n10.0.0.0/8,40.71,-74.0,US\n")
    config: dict[str, Any] = {
        "listen": listen,
        "coverage_file": "coverage.csv",
        "state": {"path": "state/control.db"},
        "fleet": {
            "origin_url": origin_url,
            "sites": [{"id": "lab", "latitude": 52.37, "longitude": 4.90, "country": "NL"}],
            "boxes": boxes,
        },
        "health": {"interval": "200ms", "timeout": "150ms", "down_after": 2, "up_after": 2},
        "invalidation": {"retry_interval": "200ms", "push_timeout": "1s"},
        "popularity": {"snapshot_interval": "1s"},
        "steering": {"ttl": "1s"},
    }
    return write_config(os.path.join(workdir, "control.yaml"), config, sections)


def box_entry(box_id: str, data_port: int, admin_port: int, **extra: Any) -> dict[str, Any]:
    return {"id": box_id, "site": "lab", "data_url": f"http://127.0.0.1:{data_port}",
            "admin_url": f"http://127.0.0.1:{admin_port}", "egress_capacity": "1Gbps", **extra}


ConfigWriter = Callable[..., str]
AUTH = {"operator_token_file": "operator.token", "box_token_file": "box.token"}  # as write_tokens() writes them


def write_tokens(workdir: Any) -> dict[str, str]:
    """The operator and box tokens ("operator-secret", "box-secret") in `workdir`; the config's auth section."""
    with open(os.path.join(workdir, "operator.token"), "w", encoding="utf-8") as fh:
        fh.write("operator-secret\n")
    with open(os.path.join(workdir, "box.token"), "w", encoding="utf-8") as fh:
        fh.write("box-secret\n")
    return dict(AUTH)


async def serve_fake_boxes(aiohttp_server: Any, *names: str) -> tuple[dict[str, FakeBox], dict[str, Any],
                                                                        list[dict[str, Any]]]:
    """A FakeBox per name, each served on its own port: (fakes, servers, fleet entries for the config)."""
    fakes = {name: FakeBox(name) for name in names}
    servers = {name: await aiohttp_server(fake.app()) for name, fake in fakes.items()}
    return fakes, servers, [box_entry(name, servers[name].port, servers[name].port) for name in names]


@dataclass
class FakeBox:
    """A box's admin API, as far as the control plane uses it, with faults on demand."""

    box_id: str
    mode: str = "ok"  # ok | junk | hang | error | wrong-box
    draining: bool = False
    egress_bps: float | None = None
    tiers: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "ssd", "state": "up", "capacity": 100,
                                                                  "used": 10}])
    invalidation_seq: int | None = 0  # None: the box does not report one
    accept_invalidations: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    titles: dict[str, int] = field(default_factory=dict)
    inventory_sequence: int = 1
    status_calls: int = 0
    # firmware (oca/admin/firmware.py as a roll-out uses it)
    version: str = "9.9"
    previous: str | None = None
    staged: str | None = None
    restarts: int = 0  # release_stats.restarts reported after an activate
    errors: int = 0  # release_stats.errors reported after an activate
    requests: int | None = None  # release_stats.requests; None = 100 when there are errors, else 0
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)  # route -> (status, message), once each
    forget_staged: bool = False  # the next activate finds nothing staged (the box restarted)
    busy_until: float = 0.0  # time.monotonic() until which a firmware step is under way (409 to another)
    firmware_calls: list[str] = field(default_factory=list)  # "stage 2.0", "activate 2.0", "revert 9.9", ...

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.add_routes([web.get("/status", self.status), web.post("/invalidations", self.invalidations),
                        web.get("/inventory/titles", self.inventory), web.post("/drain", self.drain),
                        web.post("/undrain", self.undrain), web.get("/firmware", self.firmware),
                        web.post("/firmware/stage", self.stage), web.post("/firmware/activate", self.activate),
                        web.post("/firmware/revert", self.revert)])
        return app

    def firmware_status(self) -> dict[str, Any]:
        requests = self.requests if self.requests is not None else 100 if self.errors else 0
        return {"version": self.version, "previous_version": self.previous, "staged": self.staged,
                "release_stats": {"version": self.version, "since": 0.0, "requests": requests, "errors": self.errors,
                                  "restarts": self.restarts},
                "firmware": {"state": "switching" if time.monotonic() < self.busy_until else "idle", "reason": None}}

    def _refused(self, route: str) -> web.Response | None:
        if time.monotonic() < self.busy_until:
            return web.json_response({"error": "a firmware step is already under way (switching)"}, status=409)
        if route in self.refuse:
            status, message = self.refuse.pop(route)
            return web.json_response({"error": message}, status=status)
        return None

    async def firmware(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return web.json_response(self.firmware_status())

    async def stage(self, request: web.Request) -> web.Response:
        import io

        from oca.firmware.bundle import read_bundle
        from oca.firmware.verify import parse_manifest

        version = parse_manifest(read_bundle(io.BytesIO(await request.read()), 64 << 20).manifest).version
        self.firmware_calls.append(f"stage {version}")
        refused = self._refused("stage")
        if refused is not None:
            return refused
        self.staged = version or "?"
        return web.json_response(self.firmware_status())

    async def activate(self, request: web.Request) -> web.Response:
        version = (await request.json())["version"]
        self.firmware_calls.append(f"activate {version}")
        refused = self._refused("activate")
        if refused is not None:
            return refused
        if self.version == version:
            return web.json_response(self.firmware_status())
        if self.forget_staged:
            self.forget_staged, self.staged = False, None
        if self.staged != version:
            return web.json_response({"error": f"release {version} is not staged (staged: {self.staged or 'none'})"},
                                     status=409)
        self.previous, self.version, self.staged = self.version, version, None
        return web.json_response(self.firmware_status())

    async def revert(self, request: web.Request) -> web.Response:
        version = (await request.json())["version"]
        self.firmware_calls.append(f"revert {version}")
        refused = self._refused("revert")
        if refused is not None:
            return refused
        if self.version != version:
            if self.previous != version:
                return web.json_response({"error": f"release {version} is not the previous release"}, status=409)
            self.previous, self.version = self.version, version
        self.restarts = self.errors = 0
        return web.json_response(self.firmware_status())

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.status_calls += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "junk":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if self.mode == "error":
            return web.Response(status=500)
        box = "someone-else" if self.mode == "wrong-box" else self.box_id
        body: dict[str, Any] = {"version": self.version, "box": box,
                                "site": "lab", "draining": self.draining, "tiers": self.tiers, "connections": 3,
                                "inventory_sequence": self.inventory_sequence}
        if self.egress_bps is not None:
            body["egress_bps"] = self.egress_bps
        if self.invalidation_seq is not None:
            body["invalidation_seq"] = self.invalidation_seq
        return web.json_response(body)

    async def invalidations(self, request: web.Request) -> web.Response:
        if not self.accept_invalidations:
            return web.Response(status=503)
        body = await request.json()
        for entry in body["invalidations"]:
            if entry["seq"] > (self.invalidation_seq or 0):
                self.received.append(entry)
                self.invalidation_seq = entry["seq"]
        return web.json_response({"applied_seq": self.invalidation_seq or 0})

    async def inventory(self, request: web.Request) -> web.Response:
        titles = {t: {"objects": n, "bytes": n * 1000} for t, n in self.titles.items()}
        return web.json_response({"sequence": self.inventory_sequence, "full": True, "titles": titles,
                                  "removed": []})

    async def drain(self, request: web.Request) -> web.Response:
        self.draining = True
        return web.json_response({"draining": True})

    async def undrain(self, request: web.Request) -> web.Response:
        self.draining = False
        return web.json_response({"draining": False})
