"""`promtool check metrics` finds nothing to complain about in the /metrics of a real box (master and workers,
after hits, misses and CMCD) and of the control plane; both carry process_* metrics."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from tests.conftest import Box
from tests.observability.conftest import Lab
from tests.observability.exposition import value
from tests.observability.promtool import promtool

KEY = "titles/9/720p/seg_0.m4s"


def check_metrics(text: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


def test_the_box_metrics_pass_promtool(box_factory: Callable[..., Box]) -> None:
    box = box_factory({KEY: b"x" * 5000})
    for _ in range(3):
        assert box.get(f"/{KEY}?CMCD=br%3D3000%2Cbl%3D12000%2Cot%3Dv%2Csid%3D%22s1%22")[0] == 200
    assert box.get("/titles/9/720p/absent.m4s")[0] == 404
    text: str = box.admin("/metrics")
    check_metrics(text)
    assert value(text, "process_start_time_seconds") > 0 and value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0


async def test_the_control_plane_metrics_pass_promtool(lab: Lab) -> None:
    assert (await lab.client.get("/v1/play/42/master.m3u8")).status == 200
    text = await lab.metrics()
    check_metrics(text)
    assert value(text, "process_start_time_seconds") > 0 and value(text, "process_resident_memory_bytes") > 0
