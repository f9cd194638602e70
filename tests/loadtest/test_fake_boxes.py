"""The bench's fake boxes: their /status reads as the box's own report inside a real box's operator fields."""

from __future__ import annotations

import json

from loadtest.fake_boxes import address, status_body
from oca.wire.status import BoxReport


def test_a_fake_status_is_its_box_report_among_the_operator_fields_a_box_adds() -> None:
    body = status_body("isp0001-b2")
    report = BoxReport.decode(body, "isp0001-b2")
    assert report == BoxReport.from_json(json.loads(body), "isp0001-b2")
    assert [t.state for t in report.tiers] == ["up", "up"] and report.invalidation_seq == 0
    extra = set(json.loads(body)) - set(report.to_json())
    assert {"firmware", "workers", "bytes_by_tier", "fetch", "release_stats"} <= extra  # as oca/admin's /status
    assert 1000 < len(body) < 4000


def test_fake_box_addresses_are_distinct_loopback_hosts() -> None:
    seen = [address(i) for i in range(20_000)]
    assert len(set(seen)) == 20_000
    assert all(a.startswith("127.") and not a.endswith((".0", ".255")) for a in seen)
