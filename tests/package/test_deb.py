"""The Debian package, built as `make deb` builds it and installed into a clean Debian root made with
debootstrap, exactly as README's "Install the control plane" and "Install a box" say: dpkg -i with the
declared dependencies, the programs started from their units' ExecStart= as their User= answering from the
host, then dpkg -r and dpkg --purge leaving what Debian policy says. `make package-test` runs it (root only).

The root is cached as a tarball under build/debroot-cache/ (keyed by the suite and the packages in it), so only
the first run downloads; every run unpacks a fresh copy and deletes it at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

SUITE = "bookworm"
CACHE = Path(ROOT) / "build" / "debroot-cache"
CHROOT_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
              "HOME=/root", "DEBIAN_FRONTEND=noninteractive"]
UNITS = ("oca.service", "oca-control.service", "oca-fill.service", "oca-fill.timer")
OWNED_DIRS = ("/var/lib/oca", "/var/cache/oca", "/var/cache/oca/ssd", "/var/cache/oca/hdd", "/var/log/oca",
              "/var/lib/oca-control", "/var/log/oca-control")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "debootstrap, chroot and dpkg in a root need root"
    for tool in ("debootstrap", "dpkg-deb", "chroot", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make package-test installs debootstrap)"
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    if arch not in ("amd64", "arm64"):
        return f"no wheels for architecture {arch}"
    return None


pytestmark = [pytest.mark.package, pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]


def _depends() -> list[str]:
    """The package's Depends (names), from packaging/deb/control.in, plus logrotate (a Recommends whose
    config the test checks)."""
    text = (Path(ROOT) / "packaging/deb/control.in").read_text()
    line = next(x for x in text.splitlines() if x.startswith("Depends:"))
    names = [re.split(r"[\s(]", item.strip())[0] for item in line.split(":", 1)[1].split(",")]
    return sorted({*names, "logrotate"})


def _cached_root() -> Path:
    packages = ",".join(_depends())
    key = sha256(f"{SUITE} minbase {packages}".encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-{key}.tar"
    started = time.monotonic()
    result = subprocess.run([f"{ROOT}/scripts/debroot.sh", str(tarball), SUITE, packages], capture_output=True,
                            text=True, timeout=1800)
    if result.returncode != 0:
        pytest.skip(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "debootstrap failed")
    print(f"debootstrap root {tarball.name}: {time.monotonic() - started:.1f} s")
    return tarball


def _build(source: str = ROOT) -> Path:
    started = time.monotonic()
    result = subprocess.run([f"{source}/scripts/build-deb.sh", "build"], capture_output=True, text=True,
                            timeout=1800, env={**os.environ, "PYTHON": sys.executable}, cwd=source)
    assert result.returncode == 0, result.stderr[-3000:]
    deb = Path(source) / result.stdout.strip().splitlines()[-1]
    print(f"built {deb.name}: {time.monotonic() - started:.1f} s")
    return deb


@dataclass
class Root:
    path: Path

    def run(self, script: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`sh -c script` as root inside the root."""
        result = subprocess.run(["chroot", str(self.path), *CHROOT_ENV, "sh", "-c", script], capture_output=True,
                                text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"{script!r} exited {result.returncode}: {result.stdout}{result.stderr}"
        return result

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.file(path))

    def status(self) -> str:
        """dpkg's status of oca ("install ok installed", "deinstall ok config-files", "" = unknown)."""
        return self.run("dpkg-query -W -f='${Status}' oca 2>/dev/null", check=False).stdout.strip()

    def owner(self, path: str) -> str:
        return self.run(f"stat -c %U:%G {path}").stdout.strip()

    def processes(self) -> list[int]:
        """Processes whose root is this root (only the test starts any)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/root") == str(self.path):
                    found.append(int(pid))
        return found


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


@pytest.fixture(scope="module")
def deb() -> Path:
    return _build()


@pytest.fixture(scope="module")
def deb_next(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same package at the next version (<version>.post1): an upgrade."""
    source = tmp_path_factory.mktemp("next") / "oca"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", ".venv", "node_modules", "run", "*.egg-info", ".*_cache", "__pycache__", ".hypothesis"))
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r'^version = "([^"]+)"', r'version = "\1.post1"', text, count=1, flags=re.M))
    return _build(str(source))


@pytest.fixture
def debroot(tmp_path: Path, deb: Path) -> Iterator[Root]:
    tarball = _cached_root()
    root = Root(tmp_path / "root")
    root.path.mkdir()
    started = time.monotonic()
    with tarfile.open(tarball) as archive:
        archive.extractall(root.path, filter="fully_trusted")
    print(f"root unpacked: {time.monotonic() - started:.1f} s")
    mounted: list[Path] = []
    try:
        for point in ("proc", "dev"):
            subprocess.run(["mount", "--bind", f"/{point}", str(root.file(point))], check=True, timeout=30)
            mounted.append(root.file(point))
        yield root
    finally:
        for pid in root.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while root.processes() and time.monotonic() < end:
            time.sleep(0.1)
        for mount in reversed(mounted):
            if subprocess.run(["umount", str(mount)], timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], timeout=30)
        left = _mounts_under(root.path)
        assert not left, f"still mounted, the root is kept at {root.path}: {left}"
        shutil.rmtree(root.path)  # never with /proc or /dev still bound into it (checked just above)


def readme_blocks(section: str, settings: dict[str, str]) -> str:
    """The `sh` blocks of README's ### section, in order, as one script; a block whose first line is
    `# settings` is replaced by `settings`, whose names must be exactly the block's."""
    text = (Path(ROOT) / "README.md").read_text()
    start = text.index(f"\n### {section}\n") + 1
    end = re.compile(r"^#{2,3} ", flags=re.M).search(text, start + 1)  # the next heading (code has single #s)
    body = text[start:end.start() if end else len(text)]
    script = []
    for block in re.findall(r"^```sh\n(.*?)^```$", body, flags=re.S | re.M):
        if block.startswith("# settings\n"):
            names = re.findall(r"^([A-Z_]+)=", block, flags=re.M)
            assert sorted(names) == sorted(settings), f"README's {section} settings are {names}"
            block = "".join(f"{name}='{value}'\n" for name, value in settings.items())
        script.append(block)
    assert len(script) >= 2, f"README's {section} has no sh blocks"
    return "set -eu\ncd /root\n" + "\n".join(script)


SYSTEMCTL_STUB = """#!/bin/sh
# stands in for systemctl in the test's root: logs its arguments; units in /tmp/systemctl.active are running
echo "$*" >> /tmp/systemctl.log
case "$*" in
*is-enabled*) echo disabled; exit 1 ;;
*is-active*) for unit; do :; done; grep -qx "$unit" /tmp/systemctl.active 2>/dev/null && exit 0; exit 3 ;;
esac
exit 0
"""


def systemctl_calls(root: Root) -> list[str]:
    log = root.file("/tmp/systemctl.log")
    return log.read_text().splitlines() if log.exists() else []


def unit_command(root: Root, unit: str) -> tuple[str, list[str]]:
    """(User=, ExecStart= split) of an installed unit."""
    text = root.file(f"/lib/systemd/system/{unit}").read_text()
    user = re.search(r"^User=(.+)$", text, flags=re.M)
    command = re.search(r"^ExecStart=(.+)$", text, flags=re.M)
    assert user and command, f"{unit} has no User= or ExecStart="
    return user.group(1).strip(), command.group(1).split()


def start_unit(root: Root, unit: str) -> subprocess.Popen[bytes]:
    user, command = unit_command(root, unit)
    # setpriv execs the program (no process in between, unlike runuser), so SIGTERM and the exit code are its own
    setpriv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    return subprocess.Popen(["chroot", str(root.path), *CHROOT_ENV, *setpriv, *command],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def get(url: str, token: str | None = None, deadline: float = 60) -> tuple[int, dict[str, str], bytes]:
    """GET `url`, retried until it answers (the process is starting) or `deadline` seconds pass."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{name} did not stop on SIGTERM") from None


def test_deb_contents(deb: Path) -> None:
    """The package's metadata and files, without installing it."""
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Package: oca$", fields, flags=re.M)
    assert re.search(r"^Depends: python3 \(>= 3.11\), python3 \(<< 3.12\), python3-venv, adduser$", fields, re.M)
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/oca", "./etc/oca/oca.yaml", "./etc/oca/control.yaml", "./etc/logrotate.d/oca",
                 *(f"./lib/systemd/system/{u}" for u in UNITS)):
        assert re.search(rf" {re.escape(path)}$", listing, flags=re.M), f"{path} is not in the package"
    assert re.search(r" \./usr/share/oca/wheels/oca-[^ ]+-py3-none-any\.whl$", listing, flags=re.M)
    assert " root/root " in listing and "./opt/" not in listing  # the venv is made by postinst, not shipped
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert sorted(conffiles) == ["/etc/logrotate.d/oca", "/etc/oca/control.yaml", "/etc/oca/oca.yaml"]


def test_install_serve_remove_purge(deb: Path, deb_next: Path, debroot: Root) -> None:
    root = debroot
    shutil.copy(deb, root.file(f"/root/{deb.name}"))
    shutil.copy(deb_next, root.file(f"/tmp/{deb_next.name}"))  # not in /root: README's dpkg -i ./oca_*.deb
    before_users = root.file("/etc/passwd").read_text()
    assert "\noca:" not in before_users
    # systemd is not running in a chroot: a systemctl that logs what the maintainer scripts ask of it (through
    # deb-systemd-invoke) stands in, with /run/systemd/system saying "booted with systemd"
    root.file("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    stub = root.file("/usr/local/sbin/systemctl")
    stub.write_text(SYSTEMCTL_STUB)
    stub.chmod(0o755)

    # README: Install the control plane (the package's first install is in it)
    control_port = free_port()
    started = time.monotonic()
    root.run(readme_blocks("Install the control plane", {"CONTROL_LISTEN": f"127.0.0.1:{control_port}"}))
    print(f"control plane install (README steps, dpkg -i included): {time.monotonic() - started:.1f} s")
    assert root.status() == "install ok installed"
    passwd = root.run("getent passwd oca").stdout.strip().split(":")
    assert int(passwd[2]) < 1000 and passwd[6] == "/usr/sbin/nologin", passwd  # a system user
    for path in OWNED_DIRS:
        assert root.owner(path) == "oca:oca", path
    assert os.path.islink(root.file("/opt/oca/venv"))
    assert root.run("oca --version").stdout.strip().endswith(deb.name.split("_")[1])
    conffiles = root.run("dpkg-query -W -f='${Conffiles}' oca").stdout
    for path in ("/etc/oca/oca.yaml", "/etc/oca/control.yaml", "/etc/logrotate.d/oca"):
        assert path in conffiles, path
    for unit in UNITS:
        assert root.exists(f"/lib/systemd/system/{unit}"), unit
    assert not list(root.file("/etc/systemd/system").glob("*.wants/oca*")), "a unit was enabled"
    assert systemctl_calls(root) == ["daemon-reload"], "a first install only reloads systemd"
    root.run("logrotate --debug /etc/logrotate.d/oca")  # the file parses (debug: nothing is rotated)

    # README: Install a box (a second dpkg -i of the same package on the same root: the scripts are idempotent)
    data_port, admin_port = free_port(), free_port()
    root.run("install -d -m 0700 /root/from-control && cp /etc/oca/keys/jwks.json /etc/oca/keys/box.token "
             "/etc/oca/keys/firmware.pub.pem /root/from-control/")  # what scp does between two machines
    started = time.monotonic()
    root.run(readme_blocks("Install a box", {
        "BOX_ID": "ams1-box1", "SITE": "isp-ams-1", "DATA_LISTEN": f"127.0.0.1:{data_port}",
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}", "CONTROL_URL": f"http://127.0.0.1:{control_port}",
        "FROM_CONTROL": "/root/from-control"}))
    print(f"box install (README steps, dpkg -i again): {time.monotonic() - started:.1f} s")
    assert root.status() == "install ok installed"
    assert len(list(root.file("/opt/oca").glob("venv-*"))) == 1

    help_text = root.run("oca --help").stdout
    if re.search(r"^\s+check-config\b", help_text, flags=re.M):
        form = "--config " if "--config" in root.run("oca check-config --help").stdout else ""
        for config in ("/etc/oca/oca.yaml", "/etc/oca/control.yaml"):
            root.run(f"oca check-config {form}{config}")
    else:
        warnings.warn("step skipped: `oca check-config` is not in `oca --help` yet; the configs are checked by the "
                      "box and the control plane starting on them", stacklevel=1)

    # both programs start from their units, as their users, and answer from the host
    box_token = root.file("/etc/oca/keys/box.token").read_text().strip()
    control = start_unit(root, "oca-control.service")
    box = start_unit(root, "oca.service")
    try:
        status, _, body = get(f"http://127.0.0.1:{control_port}/healthz")
        assert status == 200, body
        status, headers, body = get(f"http://127.0.0.1:{data_port}/healthz")
        assert (status, body.strip()) == (200, b"ok"), (status, body)
        assert headers.get("Server", "").startswith("oca/"), headers
        status, _, body = get(f"http://127.0.0.1:{data_port}/titles/1/master.m3u8")
        assert status in (401, 403), (status, body)  # tokens are required: the JWKS from the control plane
        status, _, body = get(f"http://127.0.0.1:{admin_port}/status")
        assert status == 401, (status, body)  # the admin port wants the box token
        status, _, body = get(f"http://127.0.0.1:{admin_port}/status", token=box_token)
        assert status == 200, body
        assert json.loads(body)["box"] == "ams1-box1"
        for pid in root.processes():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"serve" in cmdline:
                    uid = os.stat(f"/proc/{pid}").st_uid
                    assert str(uid) == passwd[2], f"{cmdline!r} runs as uid {uid}, not oca"
    finally:
        stop(box, "oca serve")
        stop(control, "oca control serve")
    assert box.returncode == 0, box.stderr.read() if box.stderr else ""
    assert control.returncode == 0, control.stderr.read() if control.stderr else ""
    assert root.exists("/var/lib/oca-control/state.db")
    cache_state = sorted(p.name for p in root.file("/var/lib/oca").iterdir())
    assert cache_state, "the box wrote nothing in /var/lib/oca"

    # an upgrade: a new virtualenv, switched to; the edited configs, the keys and the state as they were; the
    # unit that runs is restarted, the one that does not is not started
    root.file("/tmp/systemctl.active").write_text("oca.service\n")
    root.file("/tmp/systemctl.log").unlink()
    root.run(f"dpkg -i /tmp/{deb_next.name}")
    acted = [c for c in systemctl_calls(root) if not re.search(r"\bis-(enabled|active)\b", c)]
    assert acted == ["daemon-reload", "--quiet --system restart oca.service"], acted
    assert root.status() == "install ok installed"
    next_version = deb_next.name.split("_")[1]
    venvs = [p.name for p in root.file("/opt/oca").glob("venv-*")]
    assert len(venvs) == 1 and venvs[0].startswith(f"venv-{next_version}-"), venvs
    assert os.readlink(root.file("/opt/oca/venv")) == venvs[0]
    assert "id: ams1-box1" in root.file("/etc/oca/oca.yaml").read_text()
    assert root.exists("/etc/oca/keys/box.token") and root.exists("/etc/oca/jwks.json")
    assert root.run("/opt/oca/venv/bin/pip show oca").stdout.count(f"Version: {next_version}") == 1
    assert sorted(p.name for p in root.file("/var/lib/oca").iterdir()) == cache_state

    # dpkg -r: the program goes; config, keys, cache, state and logs stay; the user stays
    root.file("/tmp/systemctl.log").unlink()
    root.run("dpkg -r oca")
    assert root.status() == "deinstall ok config-files"
    assert systemctl_calls(root) == ["stop oca-fill.timer oca-fill.service oca.service oca-control.service",
                                     "daemon-reload"]
    for gone in ("/usr/bin/oca", "/opt/oca", "/lib/systemd/system/oca.service"):
        assert not root.exists(gone), f"{gone} survived dpkg -r"
    for kept in ("/etc/oca/oca.yaml", "/etc/oca/control.yaml", "/etc/logrotate.d/oca", "/etc/oca/jwks.json",
                 "/etc/oca/keys/box.token", *OWNED_DIRS):
        assert root.exists(kept), f"{kept} did not survive dpkg -r"
    assert sorted(p.name for p in root.file("/var/lib/oca").iterdir()) == cache_state
    assert root.run("getent passwd oca").stdout.strip().split(":")[2] == passwd[2]

    # installed again: the edited configs and the state are as they were
    root.run(f"dpkg -i /root/{deb.name}")
    assert root.status() == "install ok installed"
    assert "id: ams1-box1" in root.file("/etc/oca/oca.yaml").read_text()
    assert root.run("oca --version").returncode == 0

    # dpkg --purge: config, keys, cache, state, release slots and logs go; the user stays
    root.run("dpkg --purge oca")
    assert root.status() in ("", "unknown ok not-installed")
    for gone in ("/etc/oca", "/etc/logrotate.d/oca", "/opt/oca", "/usr/bin/oca", *OWNED_DIRS):
        assert not root.exists(gone), f"{gone} survived dpkg --purge"
    assert root.run("getent passwd oca", check=False).returncode == 0
    root.run("dpkg --purge oca")  # purging what is gone is no error
