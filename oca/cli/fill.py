"""`oca fill run` (on a box, from its systemd timer) and `oca fill plan BOX` (anywhere, with the operator token).

Exit codes of `oca fill run` (the table every command follows): 0 every planned byte is on the box (digests
verified), 1 some files failed (or the box's admin API refused a request), 2 bad config or usage (a refused
credential or admin token too), 3 the control plane (the box untouched) or the box's admin API cannot be
reached or did not answer within --timeout, 4 the window ended before the fill completed (the next run resumes).
Progress goes to stderr: a bar with bytes, rate and ETA on a terminal, JSON log lines otherwise; the summary
goes to stdout (text, or JSON with --json).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import click

from fill.plan import summarize
from fill.runner import BoxAdmin, Options, Progress, Report, Runner
from oca.cli.control import control_options
from oca.cli.format import bytes_option, iec, sizes
from oca.cli.options import config_option, timeout_option
from oca.config.units import parse_rate, parse_size
from oca.errors import USAGE, ConfigError, OcaError
from oca.secret_files import read_secret
from oca.wire.admin_client import admin_url
from oca.wire.control_client import ControlClient
from oca.wire.fill import BoxPlan
from oca.wire.window import Window

LOG_EVERY = 5.0  # seconds between progress log lines when stderr is not a terminal


class UsageProblem(OcaError):
    exit_code = USAGE


@click.group()
def fill() -> None:
    """The nightly fill: what a box should hold, and filling it from peers, parents and origin."""


def _rate(text: str | None) -> int:
    """Bytes per second from --rate: a bit rate (`1.2Gbit`, `400Mbps`) or bytes (`150MB`, `150MB/s`)."""
    if text is None:
        return 0
    raw = text.strip()
    try:
        if raw.lower().endswith(("bit", "bps", "bit/s")):
            return max(1, parse_rate(raw) // 8)
        return parse_size(raw.removesuffix("/s"))
    except ValueError:
        raise UsageProblem(f"--rate: expected a rate such as 1.2Gbit, 400Mbps or 150MB, got {text!r}") from None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Output:
    """Progress on stderr: a redrawn bar on a terminal, JSON lines (at most every LOG_EVERY s) otherwise."""

    def __init__(self, box: str, interactive: bool) -> None:
        self.box, self.interactive = box, interactive
        self._last_log = 0.0
        self._bar_open = False

    def event(self, event: str, fields: dict[str, Any]) -> None:
        if self.interactive:
            if event == "window_end":
                self._end_bar()
                click.echo(f"fill window ended: job {fields.get('job')} cancelled", err=True)
            elif event == "loading":
                click.echo(f"the box is loading its catalog ({fields.get('objects')} objects so far): waiting",
                           err=True)
            return
        self._log(event, fields)

    def progress(self, p: Progress) -> None:
        if self.interactive:
            width = 30
            done = min(1.0, p.bytes / p.total_bytes) if p.total_bytes else 1.0
            bar = "#" * int(done * width) + "-" * (width - int(done * width))
            line = (f"\r[{bar}] {100 * done:5.1f}%  {iec(p.bytes)}/{iec(p.total_bytes)}  "
                    f"{iec(p.rate)}/s  ETA {_duration(p.eta)}  files {p.finished}/{p.files}"
                    + (f"  failed {p.failed}" if p.failed else ""))
            click.echo(line, nl=False, err=True)
            self._bar_open = True
            if p.state in ("done", "cancelled"):
                self._end_bar()
            return
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY or p.state in ("done", "cancelled"):
            self._last_log = now
            self._log("progress", {"state": p.state, "files": p.files, "finished": p.finished, "failed": p.failed,
                                   "bytes": p.bytes, "total_bytes": p.total_bytes, "rate_bps": round(p.rate * 8),
                                   "eta_s": None if p.eta is None else round(p.eta, 1)})

    def _end_bar(self) -> None:
        if self._bar_open:
            click.echo("", err=True)
            self._bar_open = False

    def _log(self, event: str, fields: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), "prog": "oca fill", "box": self.box, "event": event, **fields}
        click.echo(json.dumps(record, separators=(",", ":")), err=True)


def _dry_run_line(report: Report, size: Callable[[float], str]) -> str:
    """`oca fill run --dry-run` in one line: what the run would do, in counts."""
    return (f"dry run, box {report.box}: plan {report.plan_files} files ({size(report.plan_bytes)}, window "
            f"{report.window}); {report.kept_files} already there, {report.fetch_files} to fetch "
            f"({size(report.fetch_bytes)}), {report.pinned} to pin, {report.unpinned} to unpin; nothing done")


def _summary(report: Report, size: Callable[[float], str], *, dry_run: bool = False, verbose: bool = False) -> str:
    if dry_run:
        lines = [_dry_run_line(report, size)]
        if verbose:
            lines += [f"  would     {json.dumps(command)}" for command in report.commands]
        return "\n".join(lines)
    lines = [f"box {report.box}: {report.message}",
             f"  plan      {report.plan_files} files, {size(report.plan_bytes)} (window {report.window})",
             f"  present   {report.present_files} files, {size(report.present_bytes)}"
             + (f" ({100 * report.present_bytes / report.plan_bytes:.1f}% of planned bytes)"
                if report.plan_bytes else ""),
             f"  this run  {report.kept_files} files already there, {report.fetch_files} to fetch "
             f"({size(report.fetch_bytes)}), {report.pinned} pinned, {report.unpinned} unpinned"]
    if report.job is not None:
        lines.append(f"  job       {report.job} {report.job_state}: {report.stored} stored, "
                     f"{size(report.bytes)} received in {report.elapsed:.1f}s")
    for source, n in sorted(report.bytes_by_source.items(), key=lambda kv: -kv[1]):
        lines.append(f"  from      {source}: {size(n)}")
    for reason, n in report.failures.items():
        lines.append(f"  failed    {n} x {reason}")
    if report.missing:
        lines.append(f"  missing   {len(report.missing)}: {', '.join(report.missing[:5])}"
                     + (" ..." if len(report.missing) > 5 else ""))
    return "\n".join(lines)


@fill.command("run")
@config_option
@click.option("--control", "control_url", metavar="URL[,URL...]", default=None,
              help="The control plane's base URL, or its replicas' separated by commas (tried in turn) "
                   "[default: control.url of the box config].")
@click.option("--window", default=None, metavar="HH:MM-HH:MM",
              help="The fill window in local time, or `always` [default: the control plane's fill.window].")
@click.option("--rate", default=None, metavar="RATE",
              help="Cap for this fill: 1.2Gbit, 400Mbps, or bytes per second such as 150MB [default: the "
                   "box's fetch.prefetch_rate only].")
@click.option("--dry-run", is_flag=True, help="Fetch the plan and show what would be done; change nothing.")
@click.option("--verbose", "-v", is_flag=True, help="With --dry-run: also list every command it would send.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (with --dry-run: every command).")
@bytes_option
@timeout_option(30.0)
def run(config_path: str, control_url: str | None, window: str | None, rate: str | None, dry_run: bool,
        verbose: bool, as_json: bool, raw_bytes: bool, timeout: float) -> None:
    """Fill this box from its plan: fetch what is missing, unpin what was dropped, within the window."""
    from oca.config import load_box_config

    config = load_box_config(config_path)
    if window is not None:
        try:
            Window.parse(window)
        except ValueError as exc:
            raise UsageProblem(f"--window: {exc}") from None
    url: str | tuple[str, ...] = control_url or config.control.url
    if not url:
        raise ConfigError(config_path, "control.url", "is not set (or pass --control URL): no plan to fetch")
    credential = None
    if config.control.credential_file is not None:
        credential = read_secret(config.control.credential_file, "control.credential_file", file=config_path)
    admin_token = None
    if config.admin.token_file is not None:
        admin_token = read_secret(config.admin.token_file, "admin.token_file", file=config_path)
    try:
        control = ControlClient(url, credential, timeout=timeout, operator=f"fill@{config.box.id}")
    except OcaError as exc:
        raise UsageProblem(str(exc)) from None
    output = Output(config.box.id, sys.stderr.isatty())
    runner = Runner(config.box.id, BoxAdmin(admin_url(*config.admin.listen), admin_token, timeout), control,
                    state_dir=config.storage.state_dir, on_progress=output.progress, on_event=output.event)
    options = Options(window=window, rate=_rate(rate), dry_run=dry_run)
    report = runner.run(options)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else _summary(report, sizes(raw_bytes),
                                                                                 dry_run=dry_run, verbose=verbose))
    if report.exit_code:
        sys.exit(report.exit_code)


@fill.command("plan")
@control_options
@click.argument("box")
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON.")
@bytes_option
def plan(client: ControlClient, box: str, as_json: bool, raw_bytes: bool) -> None:
    """BOX's fill plan from the control plane: a summary (files, bytes, by tier, by first source)."""
    raw = client.request("GET", "/v1/fill-plans/" + urllib.parse.quote(box, safe=""))
    if as_json:
        click.echo(json.dumps(raw, indent=2))
        return
    try:
        summary = summarize(BoxPlan.from_json(raw))
    except ValueError as exc:
        raise OcaError(str(exc)) from None
    size = sizes(raw_bytes)
    click.echo(f"box {summary['box']} (site {summary['site']}): {summary['titles']} titles "
               f"({summary['head_titles']} head), {summary['files']} files, {size(summary['bytes'])}; "
               f"window {raw.get('window') or 'always'}")
    for tier in summary["tiers"]:
        click.echo(f"  tier {tier['name']:<8} planned {size(tier['planned']):>10} of budget "
                   f"{size(tier['budget']):>10} (capacity {size(tier['capacity'])})")
    for name, use in summary["by_tier"].items():
        click.echo(f"  on {name:<14} {use['files']:>6} files {size(use['bytes']):>10}")
    for name, use in summary["by_first_source"].items():
        click.echo(f"  first from {name:<20} {use['files']:>6} files {size(use['bytes']):>10}")
    if summary["left_out"]:
        click.echo(f"  head titles left out (no room): {', '.join(summary['left_out'])}")
