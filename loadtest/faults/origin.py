"""Origin faults on a pull-through miss (loadtest.origin's Fault, once per key): a body cut short, headers
never sent, a slow drip, a stall, a 5xx, bytes past Content-Length, and a desync (a whole second response
sent unasked on a kept-alive connection). Each case runs on a box of its own."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from loadtest.faults.common import Ctx, Findings, Scenario, get, inventory, tier_line, tiers, wait_for
from loadtest.origin import DESYNC_FILL, Fault

KiB = 1 << 10
MiB = 1 << 20
BOX: dict[str, Any] = {"fetch": {"first_byte_timeout": "2s", "between_bytes_timeout": "2s"}}


@dataclass(frozen=True)
class Case:
    """One origin fault: what the first client must see (`expect`), then the next request must be whole."""

    name: str
    injected: str
    fault: Fault
    size: int
    expect: str  # "cut": cut short or an error, never a clean short body; "error": 502/504 with a reason;
    # "whole": 200 with every byte (and then kept)
    quick: bool = False


CASES = [
    Case("origin-truncated", "the origin closes after 300 KiB of a 1 MiB body", Fault(truncate_at=300 * KiB),
         MiB, "cut", quick=True),
    Case("origin-hang-before-headers", "the origin sends nothing for 10 s (first_byte_timeout 2 s)",
         Fault(hang_before_headers=10.0), 256 * KiB, "error"),
    Case("origin-drip", "the origin drips a 256 KiB body, 8 KiB every 50 ms (1.6 s)",
         Fault(dribble=(8 * KiB, 0.05)), 256 * KiB, "whole"),
    Case("origin-stall", "the origin stalls 5 s after 200 KiB of 1 MiB (between_bytes_timeout 2 s)",
         Fault(stall_at=(200 * KiB, 5.0)), MiB, "cut"),
    Case("origin-5xx", "the origin answers 503", Fault(status=503), 256 * KiB, "error"),
    Case("origin-surplus", "the origin sends 1,000 bytes past Content-Length", Fault(extra_bytes=1000), 256 * KiB,
         "whole"),
]


def _case(case: Case) -> Scenario:
    def run(ctx: Ctx, f: Findings) -> None:
        origin = ctx.origin()
        key, data = f"titles/8/720p/{case.name}.m4s", os.urandom(case.size)
        origin.add(key, data=data, fault=dataclasses.replace(case.fault, times=1))
        box = ctx.box("box", origin=origin, **BOX)
        f.injected = case.injected
        first = get(box.port, "/" + key)
        f.served.record(key, first, data)
        reason = first.headers.get("x-oca-reason", "")
        f.saw(f"first client: {first.status or 'no answer'}" + (f" cut after {len(first.body):,} bytes"
                                                               if first.cut else "")
              + (f" ({reason[:100]})" if reason else "") + f" in {first.seconds:.1f}s")
        if case.expect == "cut":
            f.check("the client is cut short or given an error, never a clean short body",
                    first.cut or first.status >= 500, f"{first.status}, {len(first.body)} bytes")
        elif case.expect == "error":
            f.check("the client gets 502/504 naming the failure", first.status in (502, 504) and bool(reason),
                    f"{first.status} {reason}")
        else:
            f.check("the client gets every byte", first.status == 200 and not first.cut and first.body == data,
                    f"{first.status}, {len(first.body)} bytes")
        # a fill is adopted into storage just after its last byte went out: give it a moment either way
        wait_for(lambda: key in inventory(box), 3 if case.expect == "whole" else 1)
        stored = inventory(box).get(key)
        if case.expect == "whole":
            f.check("the object is kept, with the origin's bytes", stored is not None and stored["size"] == len(data),
                    str(stored))
        else:
            f.check("nothing is kept from the failed fill", stored is None, str(stored))
        second = get(box.port, "/" + key)
        f.served.record(key, second, data)
        f.check("the next request is served whole", second.status == 200 and not second.cut and second.body == data,
                f"{second.status}")
        f.check("no tier failed", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
        f.lost.append("nothing kept from the failed fill" if stored is None else "kept whole")
        f.recovery = (f"next request {second.status}, {second.headers.get('cache-status', '?')}; origin asked "
                      f"{origin.count(key)} times")

    return Scenario(case.name, "origin", run, quick=case.quick)


def desync(ctx: Ctx, f: Findings) -> None:
    origin = ctx.origin()
    a, b = os.urandom(300 * KiB), os.urandom(200 * KiB)
    origin.add("titles/8/720p/a.m4s", data=a, fault=Fault(desync=37, times=1))
    origin.add("titles/8/720p/b.m4s", data=b)
    box = ctx.box("box", origin=origin, **BOX)
    f.injected = ("after a's body the origin sends `HTTP/1.1 200 OK ... Content-Length: 37` + 37 bytes on the "
                  "kept-alive connection; then a miss for another key, b")
    first = get(box.port, "/titles/8/720p/a.m4s")
    f.served.record("titles/8/720p/a.m4s", first, a)
    answers = [get(box.port, "/titles/8/720p/b.m4s") for _ in range(2)]
    for answer in answers:
        f.served.record("titles/8/720p/b.m4s", answer, b)
    poisoned = sum(DESYNC_FILL[:16] in answer.body for answer in answers)
    f.saw(f"a: {first.status}; b (miss, then again): " + ", ".join(f"{x.status} {len(x.body):,} bytes"
                                                                    for x in answers))
    f.check("b is never answered with the unasked-for response's 37 bytes", poisoned == 0,
            f"{poisoned} of {len(answers)} answers for b were the desync bytes")
    wait_for(lambda: "titles/8/720p/b.m4s" in inventory(box), 3)
    stored = inventory(box).get("titles/8/720p/b.m4s")
    f.check("b is stored with its own bytes", stored is not None and stored["size"] == len(b),
            f"{stored['size']} bytes" if stored else "not stored")
    f.check("no tier failed", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
    f.lost.append(f"b stored as {stored['size'] if stored else 'nothing'} bytes (origin: {len(b):,})")
    f.recovery = f"origin connections {origin.connections}, requests for b {origin.count('titles/8/720p/b.m4s')}"


def down_with_no_slice(ctx: Ctx, f: Findings) -> None:
    """A sliced object whose metadata the box holds, none of its slices, and the origin gone: the head must
    wait for the first slice, so the client gets 502/504, never a 200 whose body cannot follow."""
    origin = ctx.origin()
    key = "titles/8/1080p/six.mp4"
    data = os.urandom(6 * MiB)
    origin.add(key, data=data)
    box = ctx.box("box", origin=origin, fetch={**BOX["fetch"], "slice_size": "4MiB"})
    f.injected = "a 6 MiB object sliced (4 MiB), its only stored slice purged, then the origin stopped"
    probe = get(box.port, "/" + key, {"Range": "bytes=0-99"})
    f.served.record(key, probe, data[:100])
    wait_for(lambda: f"{key}@slice000000" in inventory(box), 3)
    box.admin("/purge", "POST", {"scope": "key", "value": f"{key}@slice000000"})
    wait_for(lambda: not inventory(box), 3)
    origin.stop()
    answers = [get(box.port, "/" + key), get(box.port, "/" + key, {"Range": f"bytes={5 * MiB}-{5 * MiB + 9}"})]
    f.saw(", ".join(f"{a.status} ({a.headers.get('x-oca-reason', '')[:60]})" for a in answers))
    f.check("each client gets 502/504 before any header, never a 200 with no body",
            all(a.status in (502, 504) and a.headers.get("cache-control") == "no-store" for a in answers),
            ", ".join(f"{a.status} {len(a.body)} bytes" for a in answers))
    f.check("no tier failed", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
    f.lost.append("none")
    f.recovery = "the origin is down: nothing to recover until it returns"


SCENARIOS = [_case(c) for c in CASES] + [Scenario("origin-desync", "origin", desync, quick=True),
                                         Scenario("origin-down-sliced", "origin", down_with_no_slice)]
