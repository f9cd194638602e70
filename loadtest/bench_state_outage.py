"""`python -m loadtest.bench_state_outage`: the control plane's PostgreSQL stopped under device load — issue 14's
"Done when" for database trouble.

A lab with two replicas behind HAProxy (`--control-replicas 2`) and locust devices (as `make loadtest` runs
them; default 100) through HAProxy. After a warm-up an invalidation and a drain are acknowledged; then the
lab's PostgreSQL is stopped for `--outage` seconds (default 30): the devices go on, an invalidation and a
drain are asked of the control URL and must be answered 503 with a one-line reason, and both replicas must
report it (`GET /v1/status`). PostgreSQL is started again and, with no replica restarted, the same writes
must succeed once both replicas say their store answers; what was acknowledged before the stop must still
be there. A Markdown table says what happened; exit 0 when all of it holds, 1 otherwise, 2 when a tool is
missing.

Rules kept here: a failed device request is one locust counts as failed (the locustfile appends each with its
time to OCA_LOCUST_FAILURES); playlists, MPDs, steering reloads and segments all count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from loadtest.bench_replicas import (
    failures,
    locust_totals,
    missing_tools,
    replicated_lab,
    start_devices,
    stop_devices,
    verdict,
    wait_until,
)
from oca.lab import Lab


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_state_outage",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100, help="locust devices (default 100)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load before the stop (default 15)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds PostgreSQL stays stopped (default 30)")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after it is back (default 10)")
    parser.add_argument("--dir", default="run/bench-replicas-lab", help="the lab's work directory (content reused)")
    parser.add_argument("--out", default="out/bench_state_outage", help="prefix of locust's CSV files and the JSON")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.outage <= 0:
        parser.error("--devices must be at least 1 and --outage above 0")
    return args


def say(line: str) -> None:
    print(f"bench_state_outage: {line}", file=sys.stderr, flush=True)


def call(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, JSON answer) of one operator request; status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-OCA-Operator": "bench"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def run(args: argparse.Namespace) -> dict[str, Any]:
    failure_file, config = replicated_lab(args.dir, args.out)
    result: dict[str, Any] = {"devices": args.devices, "outage_s": args.outage}
    with Lab(config, say=say) as lab:
        token, base = lab.operator_token, lab.control_url
        boxes = [box.id for box in lab.boxes]
        locust = start_devices(lab, args.devices, args.warmup + args.outage + args.after + 60, args.out,
                               failure_file)
        try:
            time.sleep(args.warmup)
            before = call(f"{base}/v1/invalidations", token, "POST",
                          {"scope": "title", "value": lab.titles[1], "reason": "before the outage", "id": "bench-1"})
            drained = call(f"{base}/v1/fleet/{boxes[-1]}/drain", token, "POST")
            result["acknowledged_before"] = [before[0], drained[0]]
            stopped = time.time()
            lab.stop_state()
            say(f"PostgreSQL stopped for {args.outage:.0f}s")
            noticed = wait_until(lambda: all(not (call(f"{r.url}/v1/status", token)[1] or {}).get("state", {})
                                             .get("ok", True) for r in lab.replicas), 15)
            result["replicas_reported_after_s"] = round(noticed - stopped, 2) if noticed else None
            during = [call(f"{base}/v1/invalidations", token, "POST",
                           {"scope": "title", "value": lab.titles[0], "reason": "during", "id": "bench-2"}),
                      call(f"{base}/v1/fleet/{boxes[0]}/drain", token, "POST")]
            result["writes_during"] = [f"{status} {(answer or {}).get('error', '')}" for status, answer in during]
            result["status_during"] = [(call(f"{r.url}/v1/status", token)[1] or {}).get("state")
                                       for r in lab.replicas]
            time.sleep(max(0.0, stopped + args.outage - time.time()))
            lab.start_state()
            restarted = time.time()
            back = wait_until(lambda: all((call(f"{r.url}/v1/status", token)[1] or {}).get("state", {})
                                          .get("ok") for r in lab.replicas), 60)
            result["replicas_ok_after_s"] = round(back - restarted, 2) if back else None
            after = [call(f"{base}/v1/invalidations", token, "POST",
                          {"scope": "title", "value": lab.titles[0], "reason": "after", "id": "bench-2"}),
                     call(f"{base}/v1/fleet/{boxes[0]}/undrain", token, "POST"),
                     call(f"{base}/v1/fleet/{boxes[-1]}/undrain", token, "POST")]
            result["writes_after"] = [status for status, _ in after]
            log_status, log = call(f"{base}/v1/invalidations?since=0", token)
            result["kept"] = {"invalidation bench-1": any(e.get("id") == "bench-1"
                                                         for e in (log or {}).get("invalidations", [])),
                              "invalidations listed": log_status}
            time.sleep(args.after)
            ended = time.time()
        finally:
            stop_devices(locust)
        result["lab_problems"] = lab.check()
    requests, failed_total = locust_totals(args.out)
    failed = failures(failure_file)
    result.update(requests=requests, failed_total=failed_total,
                  failed_during=sum(stopped <= at < restarted for at, _ in failed),
                  failed_after=sum(restarted <= at < ended for at, _ in failed),
                  failures=[f"{at - stopped:+.2f}s {what}" for at, what in failed][:50])
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        ("devices", f"{r['devices']} locust devices through HAProxy, {r['requests']} requests, "
                    f"{r['failed_total']} failed"),
        ("acknowledged before the stop", f"invalidation {r['acknowledged_before'][0]} (200: the same id again), "
                                         f"drain {r['acknowledged_before'][1]}"),
        (f"PostgreSQL stopped {r['outage_s']:.0f}s: device requests failed", str(r["failed_during"])),
        ("replicas report it (/v1/status state.ok false)", f"{r['replicas_reported_after_s']}s after the stop"),
        ("writes during the outage", "; ".join(r["writes_during"])),
        ("replicas' store answers again", f"{r['replicas_ok_after_s']}s after the restart, no replica restarted"),
        ("writes after", ", ".join(map(str, r["writes_after"]))),
        ("acknowledged before, still there", str(r["kept"]["invalidation bench-1"])),
        ("device requests failed after the restart", str(r["failed_after"])),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def passed(r: dict[str, Any]) -> bool:
    return (r["acknowledged_before"][0] in (200, 201) and r["acknowledged_before"][1] == 200
            and r["failed_during"] == 0 and r["failed_after"] == 0
            and all(w.startswith("503 ") and len(w) > 4 for w in r["writes_during"])
            and r["replicas_reported_after_s"] is not None and r["replicas_ok_after_s"] is not None
            and r["writes_after"][0] in (200, 201) and all(s == 200 for s in r["writes_after"][1:])
            and r["kept"]["invalidation bench-1"] and not r["lab_problems"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [m for m in missing_tools() if m != "chromium"]
    if missing:
        print(f"bench_state_outage: missing {', '.join(missing)}: make system-deps installs the Debian ones",
              file=sys.stderr)
        return 2
    result = run(args)
    return verdict(result, args.out, table(result), passed(result), "0 failed device requests, writes 503 with the "
                   "reason during the outage and accepted after it, nothing acknowledged lost")


if __name__ == "__main__":
    sys.exit(main())
