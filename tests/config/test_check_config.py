"""`oca check-config FILE` (and `oca serve --check`, `oca control serve --check`) as a real subprocess: every
broken config exits 2 with exactly one line naming the file, the key and the problem; several problems are
several lines; the shipped configs (with their paths and ports moved into a temporary directory) pass."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from oca.tokens import generate_private_key, public_jwk, write_private_key
from tests.conftest import OCA, ROOT, free_port, write_box_config
from tests.control.fixtures import write_control_config

ENV = {**os.environ, "PYTHONPATH": ROOT}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, *args], capture_output=True, text=True, timeout=60, env=ENV)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process listens on (without SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def box(workdir: str, port: int, **overrides: Any) -> str:
    return write_box_config(workdir, **overrides)


def control(workdir: str, port: int, **sections: Any) -> str:
    return write_control_config(workdir, [], **sections)


# each: (what, which config, the key named, a word of the problem, how to break it)
Breaker = Callable[[str, int], str]
BROKEN: list[tuple[str, str, str, Breaker]] = [
    ("box unknown key", "server.lisen", "unknown key",
     lambda d, p: box(d, p, server={"lisen": "127.0.0.1:1"})),
    ("box bad size", "storage.tiers[0].capacity", "expected a size",
     lambda d, p: box(d, p, storage={"state_dir": f"{d}/state",
                                     "tiers": [{"name": "ssd", "path": f"{d}/ssd", "capacity": "lots"}]})),
    ("box bad duration", "server.header_timeout", "duration",
     lambda d, p: box(d, p, server={"listen": f"127.0.0.1:{free_port()}", "header_timeout": "soon"})),
    ("box missing JWKS file", "tokens.jwks_file", "No such file",
     lambda d, p: box(d, p, tokens={"required": True, "jwks_file": "missing.json"})),
    ("box empty admin token", "admin.token_file", "empty",
     lambda d, p: box(d, p, admin={"listen": f"127.0.0.1:{free_port()}", "token_file": write(f"{d}/t", "\n")})),
    ("box read token without admin token", "admin.read_token_file", "needs admin.token_file",
     lambda d, p: box(d, p, admin={"listen": f"127.0.0.1:{free_port()}", "read_token_file": write(f"{d}/r", "r\n")})),
    ("box trusted keys not PEM", "firmware.trusted_keys_file", "",
     lambda d, p: box(d, p, firmware={"trusted_keys_file": write(f"{d}/keys.pem", "not a key\n")})),
    ("box unwritable tier", "storage.tiers[1].path", "not a directory",
     lambda d, p: box(d, p, storage={"state_dir": f"{d}/state", "tiers": [
         {"name": "ssd", "path": f"{d}/ssd", "capacity": "1MiB"},
         {"name": "hdd", "path": write(f"{d}/afile", "x") + "/hdd", "capacity": "1MiB"}]})),
    ("box data port in use", "server.listen", "Address already in use",
     lambda d, p: box(d, p, server={"listen": f"127.0.0.1:{p}"})),
    ("box admin port in use", "admin.listen", "Address already in use",
     lambda d, p: box(d, p, admin={"listen": f"127.0.0.1:{p}"})),
    ("control unknown key", "steering.tll", "unknown key",
     lambda d, p: control(d, p, steering={"tll": "1s"})),
    ("control missing operator token", "auth.operator_token_file", "No such file",
     lambda d, p: control(d, p, auth={"operator_token_file": "missing.token"})),
    ("control bad signing key", "tokens.signing_key_file", "not a PEM private key",
     lambda d, p: control(d, p, tokens={"signing_key_file": write(f"{d}/signing.pem", "junk\n")})),
    ("control port in use", "listen", "Address already in use",
     lambda d, p: control(d, p, listen=f"127.0.0.1:{p}")),
    ("control state not writable", "state", "not a directory",
     lambda d, p: control(d, p, state=f"sqlite:{write(f'{d}/afile', 'x')}/state.db")),
    ("control bad duration", "health.interval", "duration",
     lambda d, p: control(d, p, health={"interval": "often"})),
]


@pytest.mark.parametrize(("what", "key", "word", "breaker"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_broken_config_is_one_line(tmp_path: Any, held_port: int, what: str, key: str, word: str,
                                        breaker: Breaker) -> None:
    path = breaker(str(tmp_path), held_port)
    result = run("check-config", path)
    assert result.returncode == 2, (what, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (what, result.stderr)
    assert lines[0].startswith(f"{path}: {key}: "), (what, lines[0])
    assert word in lines[0], (what, lines[0])
    assert result.stdout == ""


def test_three_problems_are_three_lines(tmp_path: Any, held_port: int) -> None:
    path = write_box_config(str(tmp_path), server={"listen": f"127.0.0.1:{held_port}", "backlog": "many"},
                            admin={"listen": f"127.0.0.1:{free_port()}", "token_file": "nope.token"})
    for args in (("check-config", path), ("serve", "--check", "--config", path)):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert [line.split(": ")[1] for line in lines] == ["server.backlog", "admin.token_file", "server.listen"], lines
        assert all(line.startswith(f"{path}: ") for line in lines)
    # `oca serve` itself refuses to start with the same lines (the same checks), each prefixed `oca: `
    served = run("serve", "--config", path)
    assert served.returncode == 2
    assert [line.removeprefix("oca: ") for line in served.stderr.splitlines()] == lines


def test_control_serve_check_and_detection(tmp_path: Any, held_port: int) -> None:
    path = write_control_config(str(tmp_path), [], listen=f"127.0.0.1:{held_port}", health={"interval": "often"})
    for args in (("check-config", path), ("check-config", "--control", path), ("control", "serve", "--check",
                                                                                 "--config", path)):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert [line.split(": ")[1] for line in result.stderr.splitlines()] == ["health.interval", "listen"], args
    # forced to read it as a box config: every control-plane section is an unknown key
    forced = run("check-config", "--box", path)
    assert forced.returncode == 2 and "unknown key" in forced.stderr


def shipped_box(tmp_path: Any) -> str:
    with open(f"{ROOT}/configs/oca.yaml", encoding="utf-8") as fh:
        text = fh.read()
    key = generate_private_key("EdDSA")
    write(str(tmp_path / "jwks.json"), json.dumps({"keys": [public_jwk(key, "control-1")]}))
    text = (text.replace("/var/lib/oca", str(tmp_path / "state")).replace("/var/cache/oca", str(tmp_path / "cache"))
            .replace("/etc/oca/jwks.json", str(tmp_path / "jwks.json"))
            .replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
            .replace("127.0.0.1:8081", f"127.0.0.1:{free_port()}"))
    return write(str(tmp_path / "oca.yaml"), text)


def shipped_control(tmp_path: Any) -> str:
    with open(f"{ROOT}/configs/control.yaml", encoding="utf-8") as fh:
        text = fh.read()
    text = (text.replace("/var/lib/oca-control", str(tmp_path / "control-state"))
            .replace("127.0.0.1:8090", f"127.0.0.1:{free_port()}"))
    return write(str(tmp_path / "control.yaml"), text)


def test_shipped_configs_pass(tmp_path: Any) -> None:
    for path in (shipped_box(tmp_path), shipped_control(tmp_path)):
        for args in (("check-config", path), ("check-config", "--reload", path)):
            result = run(*args)
            assert result.returncode == 0, result.stderr
            assert result.stdout == f"{path}: ok\n" and result.stderr == ""
    assert run("serve", "--check", "--config", str(tmp_path / "oca.yaml")).returncode == 0
    assert run("control", "serve", "--check", "--config", str(tmp_path / "control.yaml")).returncode == 0
    with open(tmp_path / "oca.yaml", encoding="utf-8") as fh:
        assert yaml.safe_load(fh)["admin"]["read_token_file"] is None  # the new key is documented there


def test_reload_check_tolerates_the_running_boxs_admin_port(tmp_path: Any, held_port: int) -> None:
    """Before a SIGHUP reload the running box holds its admin port: `--reload` does not bind-test it."""
    path = write_box_config(str(tmp_path), admin={"listen": f"127.0.0.1:{held_port}"})
    assert run("check-config", path).returncode == 2
    result = run("check-config", "--reload", path)
    assert result.returncode == 0, result.stderr


def test_signing_key_and_shipped_keys_pass(tmp_path: Any) -> None:
    write_private_key(str(tmp_path / "signing.pem"), generate_private_key("EdDSA"))
    write(str(tmp_path / "operator.token"), "op\n")
    write(str(tmp_path / "read.token"), "ro\n")
    path = write_control_config(str(tmp_path), [], tokens={"signing_key_file": "signing.pem"},
                                auth={"operator_token_file": "operator.token", "read_token_file": "read.token"})
    result = run("check-config", path)
    assert result.returncode == 0, result.stderr


def test_the_one_error_loader_raises_the_first_collected_problem(tmp_path: Any) -> None:
    """load_box_config (workers, the cache CLI) and check_box read the same settings: the loader's one error is
    the check's first problem."""
    from oca.config import load_box_config
    from oca.errors import ConfigError
    from oca.serve.preflight import check_box

    path = write_box_config(str(tmp_path), server={"listen": "127.0.0.1:0", "backlog": "many", "workers": -1},
                            storage={"tiers": [{"name": "ssd", "path": "ssd", "capacity": "lots"}]})
    _, problems = check_box(path)
    assert [p.key for p in problems] == ["server.workers", "server.backlog", "storage.tiers[0].capacity"]
    with pytest.raises(ConfigError) as caught:
        load_box_config(path)
    assert str(caught.value) == str(problems[0])


def test_storage_owned_by_another_process(tmp_path: Any) -> None:
    """Another box on the same state_dir (its owner lock held) is one line; not before a reload (the running
    box holds it); the check takes nothing and writes nothing."""
    import fcntl

    path = write_box_config(str(tmp_path))
    os.makedirs(tmp_path / "state")
    with open(tmp_path / "state" / "owner.lock", "w+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242\n")
        lock.flush()
        result = run("check-config", path)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"{path}: storage.state_dir: storage at {tmp_path}/state is owned by "
                                              "another process (pid 4242): another box runs with it"]
        assert run("check-config", "--reload", path).returncode == 0
    assert (tmp_path / "state" / "owner.lock").read_text() == "4242\n"
    assert run("check-config", path).returncode == 0
