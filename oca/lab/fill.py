"""The lab's fill: every title pre-positioned on one box per site, and the table of what is where.

Rules kept here:
- Placement is pure: in each site the title goes to the first box of `rendezvous_order(title, site's boxes)`,
  the order steering ranks a site's boxes in, so a session is steered to the box its title was put on.
- The fill goes through each box's admin API (`POST /prefetch` with every catalogued file's key, size and
  digest; the box owns its disks, the lab only asks) and waits for the jobs; a failed item is a LabError
  naming the box, the key, the reason and the box's log.
- The table is read back from the boxes (`GET /inventory/titles`): objects and bytes per title, "live"
  when a box holds every catalogued file and byte, as the control plane counts it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control.steering import rendezvous_order
from oca.lab.procs import LabError
from oca.wire.inventory import TitleChanges
from oca.wire.prefetch import JobProgress, PrefetchItem, PrefetchRequest


@dataclass(frozen=True, slots=True)
class TitleHolding:
    """What one box holds of one title, as its `GET /inventory/titles` counts it."""

    objects: int
    bytes: int
    live: bool


def placement(titles: Sequence[str], site_boxes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Box id -> the titles to pre-position on it."""
    placed: dict[str, list[str]] = {box: [] for boxes in site_boxes.values() for box in boxes}
    for title in titles:
        for boxes in site_boxes.values():
            if boxes:
                placed[rendezvous_order(title, boxes)[0]].append(title)
    return placed


def admin_call(admin_url: str, token: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(admin_url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def prefetch_items(title: Mapping[str, Any]) -> list[PrefetchItem]:
    """Prefetch items for every file of a catalog record (GET /v1/catalog/<id>)."""
    return [PrefetchItem(f["path"], f["size"], f["digest"]) for f in title["files"]]


def run_fill(jobs: Mapping[str, tuple[str, list[PrefetchItem]]], token: str, logs: Mapping[str, str],
             timeout: float) -> dict[str, JobProgress]:
    """Submit one prefetch job per box (box id -> (admin URL, items)) and wait for all of them; their
    final progress by box id. LabError on a failed item or a job not done within `timeout`."""
    submitted: dict[str, int] = {}
    for box, (admin_url, items) in jobs.items():
        if items:
            try:
                answer = admin_call(admin_url, token, "/prefetch", PrefetchRequest(tuple(items)).to_json())
                submitted[box] = JobProgress.from_json(answer).id
            except (OSError, ValueError) as exc:
                raise LabError(f"box {box}: prefetch refused: {exc}; log: {logs[box]}") from None
    done: dict[str, JobProgress] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(submitted):
        for box, job in submitted.items():
            if box in done:
                continue
            try:
                progress = JobProgress.from_json(admin_call(jobs[box][0], token, f"/prefetch/{job}"))
            except (OSError, ValueError) as exc:
                raise LabError(f"box {box}: prefetch job {job} unreadable: {exc}; log: {logs[box]}") from None
            if progress.ended:
                if progress.failed:
                    key, reason = next(iter(progress.failures.items()))
                    raise LabError(f"box {box}: fill failed for {progress.failed} object(s), e.g. {key}: "
                                   f"{reason}; log: {logs[box]}")
                done[box] = progress
        if len(done) < len(submitted):
            if time.monotonic() > deadline:
                late = ", ".join(sorted(set(submitted) - set(done)))
                raise LabError(f"fill not done within {timeout:.0f}s on {late}; logs: "
                               + ", ".join(logs[b] for b in sorted(set(submitted) - set(done))))
            time.sleep(0.1)
    return done


def holdings(admin_url: str, token: str, file_counts: Mapping[str, int],
             sizes: Mapping[str, int] | None = None) -> dict[str, TitleHolding]:
    """Title id -> what one box holds of it (titles it holds nothing of are left out). Live: every file, and
    every byte when the title's size is known (slices of a large file count as objects)."""
    answer = TitleChanges.from_json(admin_call(admin_url, token, "/inventory/titles?since=0", timeout=5))
    sizes = sizes or {}
    held = {}
    for title, entry in answer.titles.items():
        objects, size_held = entry.objects, entry.bytes
        if objects:
            live = objects >= file_counts.get(title, 1 << 62) and size_held >= sizes.get(title, 0)
            held[title] = TitleHolding(objects, size_held, live)
    return held


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def table(titles: Sequence[str], boxes: Sequence[tuple[str, str, bool]], held: Mapping[str, Mapping[str, TitleHolding]],
          file_counts: Mapping[str, int]) -> str:
    """Title rows x box columns ((id, site, running)): `objects/files size live` per cell."""
    header = ["title"] + [f"{box} ({site[-1].upper()}{'' if running else ', down'})" for box, site, running in boxes]
    rows = [header]
    for title in titles:
        row = [title]
        for box, _, _ in boxes:
            h = held.get(box, {}).get(title)
            row.append("-" if h is None else
                       f"{h.objects}/{file_counts.get(title, '?')} {size(h.bytes)}{' live' if h.live else ''}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
