"""The fault suite's report: one row per scenario, judged, as a Markdown table and as JSON.

A row passes only when: no body served differs from the origin's bytes, no Python traceback is in any log of
the processes the scenario started, and every check the scenario made holds (among them: no tier failed by
a client's behaviour; the injected fault recovered, or reported in the box's /status with its reason). A
scenario that cannot run here (no root for a tmpfs, no gcc) is SKIP, with the reason, and fails nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.faults.common import Findings

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Row:
    scenario: str
    group: str
    injected: str
    clients: str
    lost: str
    recovery: str
    verdict: str
    why: list[str] = field(default_factory=list)  # the failed criteria (FAIL), or the reason (SKIP)
    seconds: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "group": self.group, "injected": self.injected, "clients": self.clients,
                "lost": self.lost, "recovery": self.recovery, "verdict": self.verdict, "why": self.why,
                "seconds": round(self.seconds, 1), "checks": self.checks, "notes": self.notes}


def judge(name: str, group: str, found: Findings, tracebacks: list[str], error: str | None, skipped: str | None,
          seconds: float) -> Row:
    why: list[str] = []
    if skipped:
        verdict, why = SKIP, [skipped]
    else:
        if error:
            why.append(f"the scenario broke: {error}")
        if found.served.corrupted:
            why.append(f"{len(found.served.corrupted)} bodies differ from the origin's: {found.served.corrupted[0]}")
        why += [f"{c.name}" + (f" ({c.detail})" if c.detail else "") for c in found.checks if not c.ok]
        if tracebacks:
            why.append(f"{len(tracebacks)} traceback(s) in logs: {tracebacks[0]}")
        verdict = FAIL if why else PASS
    clients = "; ".join([found.served.describe()] if sum(found.served.statuses.values()) else [])
    clients = "; ".join(p for p in (clients, *found.clients) if p)
    lost = "; ".join([f"{len(found.served.corrupted)} bodies corrupted", *found.lost])
    checks = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in found.checks]
    notes = [*found.notes, *found.served.corrupted[1:20], *tracebacks[1:20]]
    return Row(name, group, found.injected, clients, lost, found.recovery, verdict, why, seconds, checks, notes)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def render(rows: Sequence[Row]) -> str:
    lines = ["| scenario | injected | clients saw | lost or corrupted | recovery | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = r.verdict + (": " + "; ".join(r.why) if r.why else "")
        lines.append(f"| {r.scenario} | {_cell(r.injected)} | {_cell(r.clients)} | {_cell(r.lost)} | "
                     f"{_cell(r.recovery)} | {_cell(verdict)} |")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in (PASS, FAIL, SKIP)}
    failed = ", ".join(r.scenario for r in rows if r.verdict == FAIL)
    return (f"{len(rows)} scenarios: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
            + (f" (failed: {failed})" if failed else ""))
