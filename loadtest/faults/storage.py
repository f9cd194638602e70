"""Storage faults on a running box: kill -9 mid-write, a lost index, a tier removed, made read-only or full
(a real small tmpfs), and EIO from a tier (an LD_PRELOAD shim, eio_shim.c, compiled here with gcc)."""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

from loadtest.boxes import Box
from loadtest.faults.common import (
    Answer,
    Ctx,
    Findings,
    Scenario,
    Skip,
    digest,
    get,
    inventory,
    tier_line,
    tiers,
    wait_for,
)
from loadtest.origin import Fault

MiB = 1 << 20


def _kill_group(box: Box) -> None:
    os.killpg(box.process.pid, signal.SIGKILL)
    box.process.wait(10)


def _import(box: Box, src: str, key: str, timeout: float = 60) -> tuple[int, str]:
    """POST /cache/import: (status, reason); 0 when the box did not answer."""
    body = json.dumps({"src": src, "key": key}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}/cache/import", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")[:200]
    except OSError as exc:
        return 0, str(exc)


def _remount_rw(path: str) -> None:
    subprocess.run(["mount", "-o", "remount,rw", path], capture_output=True, timeout=30, check=False)


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _tmp_files(workdir: str) -> list[str]:
    """Temp files in the tiers' tmp dirs (the health probe's own excepted)."""
    return [os.path.join(tier, name) for tier in ("ssd", "hdd")
            for _, _, files in os.walk(os.path.join(workdir, tier, "tmp")) for name in files
            if not name.startswith(".probe")]


def kill9_mid_write(ctx: Ctx, f: Findings) -> None:
    origin = ctx.origin()
    fills = {f"titles/9/fill/seg_{i:03d}.m4s": os.urandom(192 * 1024 + i) for i in range(100)}
    for key, data in fills.items():  # dribbled: every fill is still being written when the box dies
        origin.add(key, data=data, fault=Fault(dribble=(32 * 1024, 0.15), times=1))
    config, workdir = ctx.box_config("box", {"titles/0/seed.m4s": b"seed"}, origin=origin,
                                     server={"workers": 2})
    box = ctx.start(config, workdir)
    incoming = os.path.join(workdir, "incoming")
    imports = {f"titles/5/720p/seg_{i:03d}.m4s": os.urandom(256 * 1024 + i) for i in range(100)}
    for key, data in imports.items():
        os.makedirs(os.path.dirname(os.path.join(incoming, key)), exist_ok=True)
        with open(os.path.join(incoming, key), "wb") as fh:
            fh.write(data)
    f.injected = "SIGKILL of master and workers with 100 imports and 100 pull-through fills in flight; restart"
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        gets = {k: pool.submit(get, box.port, "/" + k, timeout=30) for k in fills}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and origin.in_flight() < 20:
            time.sleep(0.005)
        puts = [pool.submit(_import, box, os.path.join(incoming, k), k, 30) for k in imports]
        while time.monotonic() < deadline and sum(p.done() for p in puts) < 5:
            time.sleep(0.002)  # kill once a few are done: the rest are queued or being written
        in_flight = origin.in_flight()
        _kill_group(box)
        imported = [p.result()[0] for p in puts]
        answers = {k: g.result() for k, g in gets.items()}
    for key, answer in answers.items():
        f.served.record(key, answer, fills[key])
    done = sum(s in (200, 201) for s in imported)
    f.saw(f"imports: {done} answered 201, {len(imported) - done} cut off by the kill; fills: {in_flight} "
          f"reading from the origin at the kill")
    f.check("the kill caught imports in flight", done < len(imports), f"{done} of {len(imports)} done first")
    started = time.monotonic()
    again = ctx.start(config, workdir)
    ready = time.monotonic() - started
    stored = inventory(again)
    bad = [k for k, o in stored.items() if k in imports and (o["size"], o["digest"]) != (len(imports[k]),
                                                                                          digest(imports[k]))]
    bad += [k for k, o in stored.items() if k in fills and (o["size"], o["digest"]) != (len(fills[k]),
                                                                                        digest(fills[k]))]
    f.served.corrupted += [f"{k}: stored with the wrong size or digest" for k in bad]
    kept = sum(k in stored for k in imports), sum(k in stored for k in fills)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        after = dict(zip(list(imports) + list(fills),
                         pool.map(lambda k: get(again.port, "/" + k, timeout=30), list(imports) + list(fills)),
                         strict=True))
    for key, answer in after.items():
        f.served.record(key, answer, imports.get(key, fills.get(key)))
    not_stored = [k for k in imports if k not in stored]
    f.check("an import not stored answers 404 after the restart",
            all(after[k].status == 404 for k in not_stored), "")
    f.check("every fill is served whole after the restart", all(after[k].status == 200 and not after[k].cut
                                                                  for k in fills))
    wait_for(lambda: not _tmp_files(workdir), 5)  # fills the clients saw end are adopted just after
    f.check("no temp file left behind", not _tmp_files(workdir), f"left: {_tmp_files(workdir)[:3]}")
    f.lost.append(f"{len(imports) - kept[0]} imports not stored (killed before done), {kept[1]} fills stored "
                  f"before the restart")
    f.recovery = f"restart to serving {ready:.1f}s; only whole objects listed ({len(stored)}), tiers {tier_line(again)}"


def index_lost(ctx: Ctx, f: Findings) -> None:
    objects = {f"titles/7/360p/seg_{i:03d}.m4s": os.urandom(20_000 + i) for i in range(200)}
    config, workdir = ctx.box_config("box", objects)
    box = ctx.start(config, workdir)
    _kill_group(box)
    index = os.path.join(workdir, "state", "index.sqlite")
    removed = [p for p in glob.glob(index + "*") if os.path.isfile(p)]
    for path in removed:
        os.remove(path)
    f.injected = f"kill -9, then the index deleted ({', '.join(os.path.basename(p) for p in removed)}); restart"
    started = time.monotonic()
    again = ctx.start(config, workdir)
    ready = time.monotonic() - started
    for key, data in objects.items():
        f.served.record(key, get(again.port, "/" + key), data)
    f.check("every object served whole after the rebuild", f.served.whole == len(objects),
            f"{f.served.whole} of {len(objects)}")
    count = sum(t["objects"] for t in tiers(again).values())
    f.lost.append(f"{len(objects) - count} objects lost from the index")
    f.recovery = f"index rebuilt by scanning the tiers: {count} objects, serving {ready:.1f}s after restart"


def tier_removed(ctx: Ctx, f: Findings) -> None:
    origin = ctx.origin()
    cold, hot = os.urandom(300_000), os.urandom(300_000)
    origin.add("titles/1/720p/cold.m4s", data=cold)
    origin.add("titles/1/720p/hot.m4s", data=hot)
    config, workdir = ctx.box_config("box", {"titles/1/720p/cold.m4s": cold}, origin=origin)
    # the same box dir again: its hot copy goes to the ssd (the config is written again, with the origin)
    config, workdir = ctx.box_config("box", {"titles/1/720p/hot.m4s": hot}, origin=origin, import_flags=("--hot",))
    box = ctx.start(config, workdir)
    ssd = os.path.join(workdir, "ssd")
    shutil.rmtree(ssd)
    f.injected = "the ssd tier's directory removed (rm -rf) under a running box"
    took = wait_for(lambda: tiers(box)["ssd"]["state"] == "failed", 10)
    state = tiers(box).get("ssd", {})
    f.check("the tier is failed in /status with a reason", took is not None and bool(state.get("error")),
            tier_line(box))
    f.check("the other tier stays up", tiers(box).get("hdd", {}).get("state") == "up", tier_line(box))
    for key, data in (("titles/1/720p/cold.m4s", cold), ("titles/1/720p/hot.m4s", hot)):
        f.served.record(key, get(box.port, "/" + key), data)
    f.check("both objects served whole (the lost one refilled from the origin)", f.served.whole == 2)
    for sub in ("objects", "tmp"):  # a fresh, empty disk mounted in its place
        os.makedirs(os.path.join(ssd, sub))
    back = wait_for(lambda: tiers(box)["ssd"]["state"] == "up", 10)
    time.sleep(1)  # and it stays up
    f.check("the tier comes back once its directory does", back is not None
            and tiers(box)["ssd"]["state"] == "up", tier_line(box))
    f.recovery = (f"ssd failed in /status after {took or 0:.1f}s ({state.get('error', '?')}); "
                  f"back up {back or 0:.1f}s after the directory returned")


def tier_read_only(ctx: Ctx, f: Findings) -> None:
    origin = ctx.origin()
    hot, fresh = os.urandom(300_000), os.urandom(300_000)
    origin.add("titles/2/720p/fresh.m4s", data=fresh)
    origin.add("titles/2/720p/hot.m4s", data=hot)  # a failed tier's objects are out of service: refilled
    workdir = os.path.join(ctx.workdir, "box")
    why = ctx.mount_tmpfs(os.path.join(workdir, "ssd"), "16m")
    if why:
        raise Skip(why)
    config, _ = ctx.box_config("box", {"titles/2/720p/hot.m4s": hot}, origin=origin, import_flags=("--hot",))
    box = ctx.start(config, workdir)
    ssd = os.path.join(workdir, "ssd")
    done = subprocess.run(["mount", "-o", "remount,ro", ssd], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise Skip(f"remount,ro failed: {done.stderr.strip()}")
    ctx.undo.append(lambda: _remount_rw(ssd))
    f.injected = "the ssd tier (a 16 MiB tmpfs) remounted read-only under a running box, then read-write"
    took = wait_for(lambda: tiers(box)["ssd"]["state"] != "up", 10)
    state = tiers(box).get("ssd", {})
    f.check("the unwritable tier is out of service in /status with a reason",
            took is not None and bool(state.get("error")), tier_line(box))
    f.served.record("titles/2/720p/hot.m4s", get(box.port, "/titles/2/720p/hot.m4s"), hot)
    f.served.record("titles/2/720p/fresh.m4s", get(box.port, "/titles/2/720p/fresh.m4s"), fresh)
    f.check("both served whole meanwhile (from the tier or refilled from the origin)",
            f.served.statuses[200] == 2 and not f.served.corrupted, f.served.describe())
    subprocess.run(["mount", "-o", "remount,rw", ssd], capture_output=True, timeout=30, check=False)
    back = wait_for(lambda: tiers(box)["ssd"]["state"] == "up", 15)
    f.check("the tier comes back once writable", back is not None, tier_line(box))
    f.recovery = (f"ssd {state.get('state', '?')} after {took or 0:.1f}s ({state.get('error', '?')}); "
                  f"up {back or 0:.1f}s after remount,rw")


def _full_tier_box(ctx: Ctx, origin_objects: dict[str, bytes], size: str = "8m") -> tuple[Box, str]:
    """A box whose last tier (hdd, where cold objects land: see Ctx.box_config) is a real tmpfs of `size` while
    its config promises 256 MiB: the disk fills before the box's own accounting says so."""
    origin = ctx.origin()
    for key, data in origin_objects.items():
        origin.add(key, data=data)
    workdir = os.path.join(ctx.workdir, "box")
    why = ctx.mount_tmpfs(os.path.join(workdir, "hdd"), size)
    if why:
        raise Skip(why)
    config, _ = ctx.box_config("box", origin=origin, fetch={"slice_size": 0})
    return ctx.start(config, workdir), workdir


def enospc_fill(ctx: Ctx, f: Findings) -> None:
    small, big = os.urandom(1 * MiB), os.urandom(12 * MiB)
    box, workdir = _full_tier_box(ctx, {"titles/3/small.m4s": small, "titles/3/big.mp4": big})
    f.served.record("titles/3/small.m4s", get(box.port, "/titles/3/small.m4s"), small)
    f.injected = "a 12 MiB pull-through fill onto an 8 MiB tmpfs tier (configured 256 MiB): ENOSPC mid-fill"
    answer = get(box.port, "/titles/3/big.mp4")
    f.served.record("titles/3/big.mp4", answer, big)
    f.saw(f"the filling client: {answer.status or 'no answer'}" + (f", {len(answer.body)} bytes then cut"
                                                                   if answer.cut else ""))
    time.sleep(1.0)
    hdd = tiers(box).get("hdd", {})
    f.check("the full tier is marked full in /status with the reason",
            hdd.get("state") == "full" and "space" in str(hdd.get("error", "")).lower(), tier_line(box))
    f.check("no tier failed", all(t["state"] != "failed" for t in tiers(box).values()), tier_line(box))
    hit = get(box.port, "/titles/3/small.m4s")
    f.served.record("titles/3/small.m4s", hit, small)
    f.check("an object already on the full tier is still a hit", hit.status == 200
            and "hit" in hit.headers.get("cache-status", ""), hit.headers.get("cache-status", ""))
    again = get(box.port, "/titles/3/big.mp4")
    f.served.record("titles/3/big.mp4", again, big)
    f.saw(f"the next request for it: {again.status}")
    wait_for(lambda: not _tmp_files(workdir), 5)  # the refill is adopted (fsync, rename) just after its last byte
    f.check("no temp file left on the full tier", not _tmp_files(workdir), f"left: {_tmp_files(workdir)[:3]}")
    f.recovery = f"tiers after: {tier_line(box)}; the next request {again.status}"


def enospc_import(ctx: Ctx, f: Findings) -> None:
    box, workdir = _full_tier_box(ctx, {})
    incoming = os.path.join(ctx.workdir, "incoming")
    os.makedirs(incoming)
    for name, size in (("big.mp4", 12 * MiB), ("small.m4s", 1 * MiB)):
        with open(os.path.join(incoming, name), "wb") as fh:
            fh.write(os.urandom(size))
    f.injected = "POST /cache/import of a 12 MiB file onto an 8 MiB tmpfs tier (configured 256 MiB): ENOSPC"
    status, reason = _import(box, os.path.join(incoming, "big.mp4"), "titles/4/big.mp4")
    f.saw(f"the import: {status} {reason.strip()[:120]}")
    f.check("the import is refused with an error", status >= 500 or status == 0, str(status))
    hdd = tiers(box).get("hdd", {})
    f.check("the full tier is marked full in /status with the reason",
            hdd.get("state") == "full" and "space" in str(hdd.get("error", "")).lower(), tier_line(box))
    f.check("no tier failed", all(t["state"] != "failed" for t in tiers(box).values()), tier_line(box))
    status2, _ = _import(box, os.path.join(incoming, "small.m4s"), "titles/4/small.m4s")
    with open(os.path.join(incoming, "small.m4s"), "rb") as fh:
        small = fh.read()
    f.served.record("titles/4/small.m4s", get(box.port, "/titles/4/small.m4s"), small)
    f.check("a smaller import afterwards is stored and served whole", status2 in (200, 201) and f.served.whole == 1,
            f"import {status2}, {f.served.describe()}")
    f.check("no temp file left on the full tier", not _tmp_files(workdir), f"left: {_tmp_files(workdir)[:3]}")
    f.recovery = f"tiers after: {tier_line(box)}"


SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eio_shim.c")


def compile_shim(ctx: Ctx) -> str:
    """The shim built once per run into the run dir (Skip when gcc is missing or fails)."""
    built = ctx.shared.get("eio_shim")
    if isinstance(built, str):
        return built
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Skip("no gcc to build the EIO shim")
    out = os.path.join(ctx.shared["run_dir"], "eio_shim.so")
    done = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", out, SHIM, "-ldl"], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise Skip(f"gcc could not build the EIO shim: {done.stderr.strip()[:200]}")
    ctx.shared["eio_shim"] = out
    return out


def eio(ctx: Ctx, f: Findings) -> None:
    shim = compile_shim(ctx)
    origin = ctx.origin()
    objects = {"titles/6/1080p/a.mp4": os.urandom(4 * MiB), "titles/6/1080p/b.mp4": os.urandom(4 * MiB),
               "titles/6/360p/a.m4s": os.urandom(50_000), "titles/6/360p/b.m4s": os.urandom(50_000)}
    for key, data in objects.items():
        origin.add(key, data=data)
    config, workdir = ctx.box_config("box", objects, origin=origin)
    hdd = os.path.realpath(os.path.join(workdir, "hdd"))
    trigger = os.path.join(workdir, "eio-on")
    box = ctx.start(config, workdir, env={"LD_PRELOAD": shim, "OCA_EIO_DIR": hdd, "OCA_EIO_TRIGGER": trigger})
    ctx.undo.append(lambda: _remove(trigger))
    with open(trigger, "w", encoding="utf-8"):
        pass
    f.injected = ("EIO on every read/sendfile/write/fsync of files under the hdd tier (LD_PRELOAD shim, "
                  "switched on by a trigger file), objects stored there")
    first: list[Answer] = []
    for key in ("titles/6/1080p/a.mp4", "titles/6/360p/a.m4s"):
        answer = get(box.port, "/" + key)
        first.append(answer)
        f.served.record(key, answer, objects[key])
    f.saw("first requests: " + ", ".join(f"{a.status}{' cut' if a.cut else ''}" for a in first))
    took = wait_for(lambda: tiers(box)["hdd"]["state"] == "failed", 10)
    state = tiers(box).get("hdd", {})
    f.check("the tier is failed in /status with the I/O error as its reason", took is not None
            and ("input/output" in str(state.get("error", "")).lower() or "eio" in str(state.get("error", ""))
                 .lower()), tier_line(box))
    for key, data in objects.items():
        f.served.record(key, get(box.port, "/" + key), data)
    f.check("every object served whole afterwards (refilled onto the other tier)",
            f.served.whole >= len(objects), f.served.describe())
    f.check("the other tier stays up", tiers(box).get("ssd", {}).get("state") == "up", tier_line(box))
    f.recovery = (f"hdd failed in /status {took or 0:.1f}s after the first error ({state.get('error', '?')}); "
                  f"misses refilled from the origin")


SCENARIOS = [
    Scenario("kill9-mid-write", "storage", kill9_mid_write, quick=True),
    Scenario("index-lost", "storage", index_lost),
    Scenario("tier-removed", "storage", tier_removed),
    Scenario("tier-read-only", "storage", tier_read_only),
    Scenario("enospc-fill", "storage", enospc_fill, quick=True),
    Scenario("enospc-import", "storage", enospc_import),
    Scenario("eio", "storage", eio, quick=True),
]
