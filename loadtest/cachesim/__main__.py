"""`python -m loadtest.cachesim`: byte and object hit ratio of the box's own storage code and of reference
policies, on a synthetic video-CDN trace or a trace file. A measurement, never a pass/fail test.

Rules it keeps:
- `oca` is the box's default configuration (configs/oca.yaml's storage section, or --config) replayed through
  the real Store (loadtest.cachesim.replay); lru, s3fifo, sieve and belady are loadtest.cachesim.reference.
- Sizes are fractions of the trace's unique bytes; ratios count every request of the trace.
- --json FILE writes a list of rows {policy, size, fill, byte_hit_ratio, object_hit_ratio}; --plot FILE.png
  draws byte hit ratio against size (matplotlib). Only this module prints or exits.
- --fill: a two-day trace; day 1's requests -> control/fill_plan.py -> placed before day 2 (loadtest.cachesim
  .fill); sizes are fractions of day 2's unique bytes and ratios count day 2's requests only. Rows: the
  policies without the fill, `oca` with it, `static` (the clairvoyant static fill) and, on a generated
  trace, `model` (the static fill by the generator's own expected requests: the ceiling of prediction),
  all three `fill: true`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

from loadtest.cachesim import fill, reference, trace
from loadtest.cachesim.replay import replay
from oca.config.loader import load_box_config
from oca.config.model import StorageConfig
from oca.errors import ConfigError
from oca.wire.fill import FillSettings

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "oca.yaml")
POLICIES = ("oca", "lru", "s3fifo", "sieve", "belady")
FILL_POLICIES = "oca,s3fifo,belady"


def fraction(text: str) -> float:
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a size is a fraction in (0, 1] or a percentage, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cachesim", description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.8, help="Zipf exponent of title popularity")
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--titles", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sizes", default="2%,5%,10%", help="cache sizes, fractions of the unique bytes")
    parser.add_argument("--policies", help=f"default: {','.join(POLICIES)}; with --fill: oca,s3fifo,belady")
    parser.add_argument("--fill", action="store_true",
                        help="two days; the nightly fill planned from day 1 is placed before day 2, measured alone")
    parser.add_argument("--head-share", type=float, default=fill.DEFAULT_SETTINGS.head_share,
                        help="with --fill: the planner's fill.head_share (head titles are placed hot, on the SSD)")
    parser.add_argument("--trace", help="replay this CSV trace (time,key,size) instead of generating one")
    parser.add_argument("--write-trace", metavar="CSV", help="write the generated trace here and stop")
    parser.add_argument("--from-access-log", metavar="LOG", help="convert a box's JSON access log to --write-trace")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the box config whose storage section is `oca`")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--plot", metavar="FILE.png")
    args = parser.parse_args(argv)
    try:
        sizes = [fraction(s) for s in args.sizes.split(",")]
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    policies = (args.policies or (FILL_POLICIES if args.fill else ",".join(POLICIES))).split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; have {', '.join(POLICIES)}")
    try:
        storage = load_box_config(args.config).storage
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    spec = trace.TraceSpec(requests=args.requests, titles=args.titles, alpha=args.alpha, seed=args.seed,
                           days=2 if args.fill else 1)
    if args.write_trace:
        if args.from_access_log:
            with open(args.from_access_log) as f:
                n = trace.write_csv(args.write_trace, trace.from_access_log(f))
        else:
            n = trace.write_csv(args.write_trace, trace.generate(spec))
        print(f"wrote {n} requests to {args.write_trace}")
        return 0
    try:
        loaded = reference.Trace.load(trace.read_csv(args.trace) if args.trace else trace.generate(spec))
    except (OSError, trace.TraceError) as e:
        print(e, file=sys.stderr)
        return 2
    unique = loaded.unique_bytes()
    total = sum(loaded.sizes[n] for n in loaded.ids)
    print(f"trace: {len(loaded)} requests, {len(loaded.keys)} objects, {unique / 1e9:.1f} GB unique, "
          f"{total / 1e9:.1f} GB requested" + ("" if args.trace else f" (alpha {args.alpha}, seed {args.seed})"))
    generated = None if args.trace else spec
    try:
        settings = dataclasses.replace(fill.DEFAULT_SETTINGS, head_share=args.head_share)
    except ValueError as e:
        parser.error(f"--head-share: {e}")
    rows = (fill_table(loaded, storage, sizes, policies, generated, settings) if args.fill
            else table(loaded, storage, sizes, policies))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot, args.alpha)
    return 0


def table(loaded: reference.Trace, storage: StorageConfig, sizes: list[float], policies: list[str]
          ) -> list[dict[str, Any]]:
    unique = loaded.unique_bytes()
    total = sum(loaded.sizes[n] for n in loaded.ids)
    rows: list[dict[str, Any]] = []
    print(f"{'policy':8} {'size':>6} {'byte hit':>9} {'obj hit':>8} {'cpu s':>7}")
    for size in sizes:
        for policy in policies:
            started = time.process_time()
            if policy == "oca":
                (hit_bytes, hits), _ = replay(loaded, storage, int(size * unique))
            else:
                hit_bytes, hits = reference.POLICIES[policy](loaded, int(size * unique), 0)
            row = {"policy": policy, "size": size, "fill": False, "byte_hit_ratio": hit_bytes / total,
                   "object_hit_ratio": hits / len(loaded)}
            rows.append(row)
            print(f"{policy:8} {size:6.1%} {row['byte_hit_ratio']:9.1%} {row['object_hit_ratio']:8.1%} "
                  f"{time.process_time() - started:7.1f}", flush=True)
    return rows


def fill_table(loaded: reference.Trace, storage: StorageConfig, sizes: list[float], policies: list[str],
               spec: trace.TraceSpec | None, settings: FillSettings = fill.DEFAULT_SETTINGS) -> list[dict[str, Any]]:
    if loaded.first_at(trace.DAY) >= len(loaded):
        print("--fill: the trace has no day 2 (no request at or after 86400 s)", file=sys.stderr)
        return []
    rows: list[dict[str, Any]] = []
    print("day 2 only; size = fraction of day 2's unique bytes")
    print(f"{'policy':8} {'fill':>5} {'size':>6} {'byte hit':>9} {'obj hit':>8}")
    for size in sizes:
        measured = fill.measure_day2(loaded, storage, size, policies, settings, spec)
        for row in measured:
            print(f"{row['policy']:8} {'yes' if row['fill'] else 'no':>5} {size:6.1%} {row['byte_hit_ratio']:9.1%} "
                  f"{row['object_hit_ratio']:8.1%}")
        ratio = {(r["policy"], r["fill"]): r["byte_hit_ratio"] for r in measured}
        with_fill = ratio[("oca", True)]
        for name in ("s3fifo", "belady"):
            if ratio.get((name, False)):
                print(f"oca with fill / {name} without: {with_fill / ratio[(name, False)]:.2f}x")
        rows += measured
    return rows


def plot(rows: list[dict[str, Any]], path: str, alpha: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        ax.plot([r["size"] * 100 for r in mine], [r["byte_hit_ratio"] * 100 for r in mine], marker="o",
                label=policy)
    ax.set_xlabel("cache size, % of unique bytes")
    ax.set_ylabel("byte hit ratio, %")
    ax.set_title(f"video-CDN trace, Zipf {alpha}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
