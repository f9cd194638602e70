"""oca.serve.reload_plan: what a SIGHUP applies, keeps for the next restart, and whether it binds again."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from oca.config import BoxConfig
from oca.serve.reload_plan import plan_reload

RUNNING = BoxConfig(source="/etc/oca/box.yaml")


def _with(**sections: dict[str, Any]) -> BoxConfig:
    """RUNNING with some settings of some sections changed."""
    return dataclasses.replace(RUNNING, **{name: dataclasses.replace(getattr(RUNNING, name), **values)
                                           for name, values in sections.items()})


@pytest.mark.parametrize("new, changed, needs_restart, rebind", [
    (RUNNING, (), (), False),
    (dataclasses.replace(RUNNING, source="/tmp/copy.yaml"), (), (), False),  # where it came from is no setting
    (_with(server={"header_timeout": 5.0}), ("server",), (), False),
    (_with(server={"listen": ("127.0.0.1", 9090)}), ("server",), (), True),
    (_with(server={"backlog": RUNNING.server.backlog + 1}), ("server",), (), True),
    (_with(server={"workers": RUNNING.server.worker_count() + 1}), ("server",), (), True),
    (_with(server={"workers": os.cpu_count() or 1}), ("server",), (), False),  # 0 meant one per core already
    (_with(fetch={"max_fills": 3}, box={"site": "ams"}), ("box", "fetch"), (), False),
    (_with(storage={"access_flush_interval": 0.5}), ("storage",), ("storage",), False),
    (_with(admin={"listen": ("127.0.0.1", 9091)}, fetch={"max_fills": 3}), ("admin", "fetch"), ("admin",), False),
    (_with(storage={"access_flush_interval": 0.5}, server={"listen": ("127.0.0.1", 9090)}),
     ("server", "storage"), ("storage",), True),
])
def test_reload_diff(new: BoxConfig, changed: tuple[str, ...], needs_restart: tuple[str, ...], rebind: bool) -> None:
    plan = plan_reload(RUNNING, new)
    assert (plan.changed, plan.needs_restart, plan.rebind) == (changed, needs_restart, rebind)
    assert plan.reloadable == tuple(s for s in changed if s not in needs_restart)


def test_the_new_generation_runs_the_new_file_but_the_sections_kept_until_a_restart() -> None:
    new = _with(storage={"access_flush_interval": 0.5}, admin={"listen": ("127.0.0.1", 9091)},
                fetch={"max_fills": 3}, http={"max_ranges": 2})
    plan = plan_reload(RUNNING, new)
    assert plan.config.storage == RUNNING.storage and plan.config.admin == RUNNING.admin
    assert plan.config.fetch == new.fetch and plan.config.http == new.http and plan.config.source == new.source
    assert plan_reload(RUNNING, RUNNING).config == RUNNING
