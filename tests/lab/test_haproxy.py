"""The HAProxy config the lab writes in front of its control-plane replicas (exact text), and the stats it reads."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from oca.lab.haproxy import Replica, haproxy_config, parse_stat

TWO = [Replica("r1", "127.0.0.1", 40001), Replica("r2", "127.0.0.1", 40002)]

EXPECTED = """\
# Written by oca lab up (oca/lab/haproxy.py): the lab's control URL in front of its control replicas.
global
    log stdout format raw local0 info
    stats socket /lab/control/haproxy.sock mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 310s
    timeout server 310s
    timeout http-request 10s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend control_url
    bind 127.0.0.1:8090
    default_backend control

backend control
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
    default-server inter 500ms fall 2 rise 2
    server r1 127.0.0.1:40001 check
    server r2 127.0.0.1:40002 check
"""


def test_two_replicas_behind_the_control_url() -> None:
    assert haproxy_config(("127.0.0.1", 8090), TWO, "/lab/control/haproxy.sock") == EXPECTED


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                    reason="haproxy missing: make system-deps")
def test_haproxy_accepts_it(tmp_path: Any) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(("127.0.0.1", 8090), TWO, str(tmp_path / "s.sock")))
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    done = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_show_stat_gives_each_replica_state() -> None:
    text = ("# pxname,svname,qcur,status,weight,\n"
            "control_url,FRONTEND,,OPEN,,\n"
            "control,r1,0,UP,1,\n"
            "control,r2,0,DOWN 1/2,1,\n"
            "control,BACKEND,0,UP,1,\n\n")
    assert parse_stat(text) == {"r1": "UP", "r2": "DOWN 1/2"}
