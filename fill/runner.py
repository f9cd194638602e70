"""The fill runner: carries out the pure diff (fill/plan.py) against the local box's admin API. It talks to
the control plane and the box over HTTP only, in the wire model's terms (oca/wire/): plan, inventory, jobs.

Rules kept here:
- The box owns its disks; the runner only asks: `PUT /cache/fill-scores` with the plan's per-file scores
  (every planned file's, held or not; `{}` from a plan without scores, which ends the previous plan's), then
  `POST /cache/pin` for the unpins and pins, then one `POST /prefetch` job with the missing files in plan
  order, each with its source order, under the rate. A box too old to know the scores route (404) is
  filled all the same.
- The control plane is asked first and the box only after a usable plan came back: when the control plane
  cannot be reached (or answers 5xx, or junk) nothing on the box is touched (exit 3).
- The job is polled until done; at the end of the window it is cancelled (`DELETE /prefetch/<id>`, exit 4).
  Files finished by then are in the box's inventory, so the next run's diff skips them: resuming never
  refetches a completed file. The job id and the box's pid go to a small state file, so a run that follows
  a killed run cancels the orphaned job first (a box restarted since then has forgotten it anyway).
- A box whose catalog is still loading from its index (`loading` in its /status: just restarted) answers
  its inventory only once loaded; the runner waits for that (up to `Options.load_wait`, or the window's
  end), rather than letting a request time out (at 10^6 objects the load takes tens of seconds).
- Success is measured on the box, not believed from the job: after the job the inventory is read again and
  every planned file must be there with the plan's digest (exit 0), else exit 1 naming what is missing.
- Time is injected (wall clock, local time of day, sleep) so the window logic is tested without waiting.
- Errors are OcaError subclasses carrying their exit code; only the CLI prints and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fill.plan import Coverage, Diff, Fetch, SetPin, coverage, diff, failure_reasons, prefetch_items
from oca.errors import FAILED, OK, UNREACHABLE, USAGE, WINDOW_CLOSED, OcaError  # the exit-code table
from oca.wire.admin_client import AdminClient, AdminError
from oca.wire.codec import WireError
from oca.wire.control_client import ControlClient, ControlError
from oca.wire.fill import BoxPlan, FillScores, PlanReply
from oca.wire.inventory import InventoryObject, Listing, lookup_batches
from oca.wire.prefetch import JobProgress, PrefetchRequest
from oca.wire.window import Window, local_second_of_day

CONTROL_UNREACHABLE, WINDOW_ENDED = UNREACHABLE, WINDOW_CLOSED
PRIORITY = -10  # below an operator's prefetch jobs (priority 0 by default)
STATE_FILE = "fill-job.json"


class ControlUnreachable(OcaError):
    exit_code = CONTROL_UNREACHABLE


class PlanRefused(OcaError):
    """The control plane refused the request (unknown box, wrong credential): a configuration problem."""

    exit_code = USAGE


class BoxFailed(OcaError):
    """The local box's admin API refused a request or answered junk (exit 1; a refused token exits 2)."""

    exit_code = FAILED


class BoxRefused(BoxFailed):
    """The local box's admin API refused the admin token: a configuration problem (exit 2)."""

    exit_code = USAGE


class BoxUnreachable(BoxFailed):
    """The local box's admin API cannot be reached or did not answer in time (down, restarting): exit 3."""

    exit_code = UNREACHABLE


# --- the local box's admin API ------------------------------------------------------------------------------


class BoxAdmin(AdminClient):
    """The local box's admin API, as the runner uses it: BoxUnreachable (exit 3) when it cannot be reached,
    BoxFailed otherwise (exit 1, or 2 for a refused admin token)."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        super().__init__(base_url, token, timeout)

    def call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        try:
            return self.request(method, path, body, missing_ok=missing_ok)
        except AdminError as exc:
            if exc.unreachable:
                raise BoxUnreachable(f"{exc} ({method} {path})") from None
            if exc.status in (401, 403):
                raise BoxRefused(f"{exc} ({method} {path}); the box's admin token comes from admin.token_file") \
                    from None
            raise BoxFailed(f"{exc} ({method} {path})") from None

    def inventory(self, keys: Sequence[str]) -> list[InventoryObject]:
        """What the box holds of `keys` (the plan's), and every pinned object under `titles/` (what the plan may
        have dropped): O(plan + pinned) on the box. A full listing walked every object the box holds, and at
        10^6 objects kept its admin API (and its health answers) busy for longer than a health poll waits. A
        box too old for `POST /inventory/lookup` (404) gets the full listing."""
        held: dict[str, InventoryObject] = {}
        for batch in lookup_batches(keys):
            answer = self.call("POST", "/inventory/lookup", {"keys": batch}, missing_ok=True)
            if answer is None:
                return self._listing("/inventory?prefix=" + urllib.parse.quote("titles/"))
            held.update((o.key, o) for o in self._listing_of(answer))
        for obj in self._listing("/inventory?pinned=1&prefix=" + urllib.parse.quote("titles/")):
            held.setdefault(obj.key, obj)
        return list(held.values())

    def _listing(self, path: str) -> list[InventoryObject]:
        return self._listing_of(self.call("GET", path))

    @staticmethod
    def _listing_of(answer: object) -> list[InventoryObject]:
        return list(Listing.from_json(answer, "the box's inventory").objects)

    def job_progress(self, method: str, path: str, body: Any = None, *,
                     missing_ok: bool = False) -> JobProgress | None:
        """A prefetch job's progress as the box answers it (None for a 404 when missing_ok)."""
        answer = self.call(method, path, body, missing_ok=missing_ok)
        if answer is None and missing_ok:
            return None
        try:
            return JobProgress.from_json(answer, "the box's prefetch job")
        except WireError as exc:
            raise BoxFailed(f"{exc} ({method} {path})") from None


# --- a run --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    window: str | None = None  # --window; None = the plan's window
    rate: int = 0  # bytes per second for this job; 0 = only the box's fetch.prefetch_rate
    dry_run: bool = False
    poll_interval: float = 0.5
    priority: int = PRIORITY
    load_wait: float = 1800.0  # seconds to wait for a box still loading its catalog (see the module rules)


@dataclass(frozen=True)
class Progress:
    """What a progress bar or a log line shows, once per poll."""

    files: int  # files in the job
    finished: int
    failed: int
    bytes: int  # bytes received so far by the job
    total_bytes: int  # bytes the job is to fetch
    elapsed: float
    state: str

    @property
    def rate(self) -> float:
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return max(0.0, (self.total_bytes - self.bytes) / rate) if rate > 0 else None


@dataclass
class Report:
    box: str
    exit_code: int = OK
    message: str = ""
    window: str | None = None
    plan_files: int = 0
    plan_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    fetch_files: int = 0
    fetch_bytes: int = 0
    pinned: int = 0
    unpinned: int = 0
    scored: int = 0  # planned files whose score the box took (0: the plan has none, or the box is too old)
    job: int | None = None
    job_state: str | None = None
    stored: int = 0
    bytes: int = 0
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> files
    present_files: int = 0
    present_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    commands: list[dict[str, Any]] = field(default_factory=list)  # --dry-run: what would be done

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if k != "missing"}
        body["missing"] = self.missing[:100]
        body["missing_count"] = len(self.missing)
        return body


Clock = Callable[[], float]


@dataclass
class Runner:
    box_id: str
    admin: BoxAdmin
    control: ControlClient
    state_dir: str | None = None  # where the job id of the last run is kept; None = nowhere
    clock: Clock = time.time
    second_of_day: Callable[[float], float] = local_second_of_day
    sleep: Callable[[float], None] = time.sleep
    on_progress: Callable[[Progress], None] = lambda progress: None
    on_event: Callable[[str, dict[str, Any]], None] = lambda event, fields: None

    def fetch_plan(self) -> tuple[BoxPlan, str | None]:
        """The box's plan and the control plane's window; ControlUnreachable (exit 3) or OcaError (exit 2)."""
        path = "/v1/fill-plans/" + urllib.parse.quote(self.box_id, safe="")
        try:
            raw = self.control.request("GET", path)
        except ControlError as exc:
            if exc.status >= 500:
                raise ControlUnreachable(f"{exc}; the box was not touched") from None
            if exc.status in (401, 403):
                raise PlanRefused(f"{exc}; the box's credential comes from control.credential_file; "
                                  "the box was not touched") from None
            raise PlanRefused(f"{exc}; the box was not touched") from None
        try:
            reply = PlanReply.from_json(raw)
        except WireError as exc:
            raise ControlUnreachable(f"control plane sent an unusable plan: {exc}; the box was not touched") from None
        if reply.plan.box != self.box_id:
            raise ControlUnreachable(f"control plane sent the plan of {reply.plan.box!r}, not {self.box_id!r}")
        return reply.plan, reply.window

    def run(self, options: Options) -> Report:
        started = self.clock()
        report = Report(self.box_id)
        plan, plan_window = self.fetch_plan()
        window_text = options.window if options.window is not None else plan_window
        window = Window.parse(window_text) if window_text is not None else None
        report.window = str(window) if window is not None else "always"
        report.plan_files, report.plan_bytes = len(plan.files), plan.bytes
        self.on_event("plan", {"files": len(plan.files), "bytes": plan.bytes, "titles": len(plan.titles),
                               "window": report.window})
        status = self.admin.call("GET", "/status")
        if isinstance(status, dict) and status.get("box") not in (None, self.box_id):
            raise OcaError(f"the admin API answers for box {status.get('box')!r}, the config says {self.box_id!r}")
        deadline = self._deadline(window, started)
        self._wait_loaded(status, started + options.load_wait if deadline is None or deadline <= started
                          else min(deadline, started + options.load_wait), options)
        keys = [f.key for f in plan.files]
        held = self.admin.inventory(keys)
        changes = diff(plan, held)
        self._count(report, changes)
        self.on_event("diff", {"keep": len(changes.keep), "fetch": len(changes.fetch),
                               "fetch_bytes": changes.fetch_bytes, "pin": len(changes.pin),
                               "unpin": len(changes.unpin)})
        if options.dry_run:
            report.commands = [_describe(c) for c in changes.commands()]
            report.message = "dry run: nothing done"
            return self._finish(report, plan, held, started, window_ended=False, dry_run=True)
        if deadline is not None and deadline <= started:
            report.message = f"outside the fill window {window}: nothing done"
            return self._finish(report, plan, held, started, window_ended=True)
        self._cancel_orphan(status)
        scores = FillScores.of(plan)
        if self.admin.call("PUT", "/cache/fill-scores", scores.to_json(), missing_ok=True) is not None:
            report.scored = len(scores.scores)
        window_ended = False
        for command in changes.commands():
            if isinstance(command, SetPin):
                self.admin.call("POST", "/cache/pin", {"key": command.key, "pinned": command.pinned},
                                missing_ok=True)
            elif isinstance(command, Fetch):
                window_ended = self._fetch(plan, command, options, report, deadline)
        return self._finish(report, plan, self.admin.inventory(keys), started, window_ended)

    # -- steps -------------------------------------------------------------------------------------------

    def _count(self, report: Report, changes: Diff) -> None:
        report.kept_files, report.kept_bytes = len(changes.keep), changes.keep_bytes
        report.fetch_files, report.fetch_bytes = len(changes.fetch), changes.fetch_bytes
        report.pinned, report.unpinned = len(changes.pin), len(changes.unpin)

    def _wait_loaded(self, status: object, until: float, options: Options) -> None:
        """Return once the box's /status no longer says its catalog is loading; BoxUnreachable at `until`."""
        if not (isinstance(status, dict) and status.get("loading") is True):
            return
        self.on_event("loading", {"objects": status.get("objects")})
        begun = self.clock()
        while isinstance(status, dict) and status.get("loading") is True:
            if self.clock() >= until:
                raise BoxUnreachable(f"the box was still loading its catalog from its index after "
                                     f"{self.clock() - begun:.0f}s ({status.get('objects')} objects so far)")
            self.sleep(options.poll_interval)
            status = self.admin.call("GET", "/status")
        self.on_event("loaded", {"objects": status.get("objects") if isinstance(status, dict) else None,
                                 "waited": round(self.clock() - begun, 3)})

    def _deadline(self, window: Window | None, now: float) -> float | None:
        return None if window is None else now + window.remaining(self.second_of_day(now))

    def _fetch(self, plan: BoxPlan, command: Fetch, options: Options, report: Report,
               deadline: float | None) -> bool:
        """Submit the job and poll it to its end; True when the window ended first (the job is cancelled)."""
        request = PrefetchRequest(prefetch_items(plan, command.files), options.priority, options.rate)
        job = self.admin.job_progress("POST", "/prefetch", request.to_json())
        assert job is not None  # not missing_ok: a 404 raised
        job_id = job.id
        report.job = job_id
        self._remember(job_id)
        self.on_event("job", {"id": job_id, "files": len(command.files), "rate": options.rate})
        total = sum(f.size for f in command.files)
        begun = self.clock()
        window_ended = False
        while True:
            progress = self.admin.job_progress("GET", f"/prefetch/{job_id}")
            assert progress is not None
            self._take(report, progress)
            self.on_progress(Progress(len(command.files), progress.finished, progress.failed, progress.bytes, total,
                                      self.clock() - begun, progress.state))
            if progress.ended:
                break
            if deadline is not None and self.clock() >= deadline:
                cancelled = self.admin.job_progress("DELETE", f"/prefetch/{job_id}")
                assert cancelled is not None
                self._take(report, cancelled)
                self.on_event("window_end", {"job": job_id, "finished": report.stored})
                window_ended = True
                break
            self.sleep(options.poll_interval)
        self._forget()
        return window_ended

    def _take(self, report: Report, progress: JobProgress) -> None:
        report.job_state = progress.state
        report.stored = progress.stored
        report.bytes = progress.bytes
        report.bytes_by_source = dict(progress.bytes_by_source)
        report.failures = failure_reasons(progress.failures)

    def _finish(self, report: Report, plan: BoxPlan, held: list[InventoryObject], started: float,
                window_ended: bool, dry_run: bool = False) -> Report:
        there: Coverage = coverage(plan, held)
        report.present_files, report.present_bytes = there.present_files, there.present_bytes
        report.missing = list(there.missing)
        report.elapsed = round(self.clock() - started, 3)
        if dry_run or there.complete:
            report.exit_code = OK
            report.message = report.message or "every planned file is on the box with its digest"
        elif window_ended:
            report.exit_code = WINDOW_ENDED
            report.message = report.message or (f"the fill window {report.window} ended with "
                                                f"{len(there.missing)} planned files still missing; "
                                                "the next run resumes")
        else:
            report.exit_code = FAILED
            report.message = f"{len(there.missing)} planned files are not on the box (see failures)"
        return report

    # -- the orphaned job of a killed run ---------------------------------------------------------------

    def _state_path(self) -> str | None:
        return os.path.join(self.state_dir, STATE_FILE) if self.state_dir else None

    def _remember(self, job_id: int) -> None:
        path = self._state_path()
        if path is None:
            return
        with contextlib.suppress(OSError):
            status = self.admin.call("GET", "/status")
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"job": job_id, "box_pid": status.get("pid"), "box_uptime": status.get("uptime"),
                           "time": self.clock()}, fh)
            os.replace(tmp, path)

    def _forget(self) -> None:
        path = self._state_path()
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _cancel_orphan(self, status: Any) -> None:
        path = self._state_path()
        if path is None:
            return
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            return
        if isinstance(state, dict) and isinstance(status, dict) and state.get("box_pid") == status.get("pid") \
                and isinstance(state.get("job"), int):
            answer = self.admin.job_progress("DELETE", f"/prefetch/{state['job']}", missing_ok=True)
            if answer is not None:
                self.on_event("orphan_cancelled", {"job": state["job"], "state": answer.state})
        self._forget()


def _describe(command: SetPin | Fetch) -> dict[str, Any]:
    if isinstance(command, SetPin):
        return {"command": "pin" if command.pinned else "unpin", "key": command.key}
    return {"command": "fetch", "files": len(command.files), "bytes": sum(f.size for f in command.files),
            "first": [f.key for f in command.files[:5]]}
