"""`make loadtest`: a bounded, headless locust run of player devices against a lab of its own.

`python -m loadtest.devices_run [--users 200] [--duration 60s] [--titles 3] [--synthetic] [--out out/loadtest]`
starts a lab (origin, control plane, 3 boxes in 2 sites; real video where ffmpeg is installed), runs
`loadtest/locustfile.py` headless against its control plane for the given time with the given number of
devices, writes locust's HTML report and CSV files next to `--out`, prints locust's summary and the
devices' own (startup p50/p99, rebuffer ratio, bitrates, pathway switches, errors by kind), and stops the
lab. While the lab starts it prints each step (the content encode: title, step, time left); at the end,
where the HTML report and the CSV files are. The exit code is locust's: non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from oca.lab import Lab, LabConfig

LOCUSTFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locustfile.py")
CSV_SUFFIXES = ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv")  # locust's --csv PREFIX


def report_paths(out: str) -> list[str]:
    """What locust writes for `--csv OUT --html OUT.html`: the HTML report first, then the CSV files."""
    prefix = os.path.abspath(out)
    return [f"{prefix}.html", *(f"{prefix}{suffix}" for suffix in CSV_SUFFIXES)]


def report_lines(out: str, exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """`loadtest: HTML report /abs/out/loadtest.html`, then the CSV files; a missing file says so."""
    html, *csvs = report_paths(out)
    lines = [f"loadtest: HTML report {html}" + ("" if exists(html) else " (not written)")]
    lines += [f"loadtest: CSV         {path}" + ("" if exists(path) else " (not written)") for path in csvs]
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.devices_run", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="simulated devices (default 200)")
    parser.add_argument("--duration", default="60s", help="how long locust runs, e.g. 60s, 5m (default 60s)")
    parser.add_argument("--titles", type=int, default=3, help="titles in the lab (default 3)")
    parser.add_argument("--title-seconds", type=int, default=90,
                        help="length of each title: longer than the run, so sessions keep playing (default 90)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic titles (no ffmpeg)")
    parser.add_argument("--out", default="out/loadtest", help="prefix of the CSV files and the HTML report")
    parser.add_argument("--dir", default="run/loadtest-lab", help="the lab's work directory (content is reused)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.titles < 1:
        parser.error("--users and --titles must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    config = LabConfig(workdir=args.dir, titles=args.titles, duration=args.title_seconds, synthetic=args.synthetic,
                       control_port=0, box_ports=0)
    print(f"loadtest: starting a lab in {os.path.abspath(args.dir)} ({args.titles} title(s) of "
          f"{args.title_seconds} s, made once, then reused)", file=sys.stderr, flush=True)
    with Lab(config, say=lambda line: print(f"lab: {line}", file=sys.stderr, flush=True)) as lab:
        env = dict(os.environ, OCA_LOCUST_TITLES=",".join(lab.titles),
                   OCA_LOCUST_CLIENTS=",".join(lab.site_clients.values()), OCA_LOCUST_HEADER=lab.client_header)
        command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", str(args.users),
                   "-r", str(min(args.users, 50)), "-t", args.duration, "--host", lab.control_url,
                   "--csv", args.out, "--html", f"{args.out}.html", "--only-summary"]
        print(f"loadtest: {args.users} devices for {args.duration} against {lab.control_url} "
              f"(titles {', '.join(lab.titles)})", file=sys.stderr, flush=True)
        code = subprocess.run(command, env=env, check=False).returncode
    for line in report_lines(args.out):
        print(line, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
