"""Free ports: a port handed out once is not handed out again, even when the kernel offers it again."""

from __future__ import annotations

import pytest

from loadtest import ports


def test_a_port_the_kernel_offers_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel may give a closed probe's port to the next probe: that made a box's admin.listen equal its
    # server.listen in CI (tests/serve/test_cmsd.py, "admin.listen: ... is server.listen too")
    offers = iter([40001, 40001, 40001, 40002])
    monkeypatch.setattr(ports, "_probe", lambda: next(offers))
    monkeypatch.setattr(ports, "_handed", type(ports._handed)())
    assert [ports.free_port(), ports.free_port()] == [40001, 40002]


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    offers = iter(range(50000, 50000 + ports.REMEMBERED + 1))
    monkeypatch.setattr(ports, "_probe", lambda: next(offers))
    monkeypatch.setattr(ports, "_handed", type(ports._handed)())
    for _ in range(ports.REMEMBERED + 1):
        ports.free_port()
    assert len(ports._handed) == ports.REMEMBERED and 50000 not in ports._handed


def test_a_kernel_that_only_offers_handed_ports_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_probe", lambda: 40001)
    monkeypatch.setattr(ports, "_handed", type(ports._handed)())
    assert ports.free_port() == 40001
    with pytest.raises(OSError, match="64 probes"):
        ports.free_port()


def test_real_ports_are_distinct() -> None:
    handed = ports.free_ports(200)
    assert len(set(handed)) == 200
