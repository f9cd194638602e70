"""A real worker process's handshake, with the test as its master: it says which protocol versions it speaks
first, and a refusal (or a version it does not speak) ends it with the reason logged, before it serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from oca.protocol import codec as protocol
from oca.protocol.codec import SPEAKS
from oca.protocol.messages import Hello, Refused, Welcome


def _worker() -> tuple[subprocess.Popen[bytes], socket.socket, list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    ours, theirs = socket.socketpair()
    fill_ours, fill_theirs = socket.socketpair()
    fds = (listener.fileno(), theirs.fileno(), fill_theirs.fileno())
    process = subprocess.Popen(
        [sys.executable, "-m", "oca.serve.worker", "--config", "box.yaml", "--listen-fd", str(fds[0]),
         "--control-fd", str(fds[1]), "--fill-fd", str(fds[2]), "--loop", "asyncio"],
        pass_fds=fds, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    for sock in (listener, theirs, fill_theirs):
        sock.close()
    ours.settimeout(30)
    return process, ours, [fill_ours]


@pytest.mark.parametrize(("answer", "logged"), [
    (Refused("the worker speaks protocol versions [4, 3], this master speaks [2, 1]: no version in common"),
     "not serving: the master refused this worker: the worker speaks protocol versions [4, 3], this master "
     "speaks [2, 1]: no version in common"),
    (Welcome(99, {}), "not serving: the master chose protocol version 99, which this worker does not speak"),
])
def test_a_refused_worker_exits_with_the_reason(answer: Welcome | Refused, logged: str) -> None:
    process, control, keep = _worker()
    try:
        hello = b""
        while not hello.endswith(b"\n"):
            chunk = control.recv(4096)
            assert chunk, "the worker closed its control socket before its hello"
            hello += chunk
        assert protocol.read_hello(hello[:-1]) == Hello(SPEAKS)
        control.sendall(protocol.encode_answer(answer))
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        control.close()
        for sock in keep:
            sock.close()
    assert process.returncode == 2
    assert logged in stderr.decode(), stderr.decode()
    assert "Traceback" not in stderr.decode()
