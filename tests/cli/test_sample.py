"""`oca sample` (what `make run` runs): the sample's files and config, and the real command end to end — it
builds the cache from the synthetic title and a request over a real socket is a hit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from oca.config import load_box_config
from oca.content.sample import write_sample
from tests.conftest import OCA, free_port, http_request


def test_the_sample_is_the_synthetic_title_and_a_loopback_box_config_without_tokens(tmp_path: Path) -> None:
    made = write_sample(str(tmp_path / "run"), 18080, 18081)
    config = load_box_config(made.config)
    assert (config.server.listen, config.admin.listen) == (("127.0.0.1", 18080), ("127.0.0.1", 18081))
    assert config.tokens.required is False
    # the box's own files stay under the work directory, whatever the current directory is
    assert config.storage.state_dir == str(tmp_path / "run" / "state")
    assert [t.path for t in config.storage.tiers] == [str(tmp_path / "run" / "cache" / n) for n in ("ssd", "hdd")]
    assert config.log.access_log == made.access_log
    title = Path(made.content, made.title)
    assert made.title == "titles/1001"
    assert (title / "master.m3u8").read_bytes().startswith(b"#EXTM3U")
    assert (title / "manifest.mpd").is_file() and (title / "720p" / "seg_00001.m4s").is_file()
    assert b"not video" in (title / "720p" / "seg_00001.m4s").read_bytes()  # synthetic.py's filler


def test_oca_sample_imports_the_title_and_serves_it_as_hits(tmp_path: Path) -> None:
    workdir, port, admin_port = tmp_path / "run", free_port(), free_port()
    log = tmp_path / "sample.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([OCA, "sample", str(workdir), "--port", str(port), "--admin-port",
                                    str(admin_port)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if http_request(port, "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        title = workdir / "sample" / "titles" / "1001"
        status, headers, body = http_request(port, "/titles/1001/master.m3u8")
        assert status == 200 and body == (title / "master.m3u8").read_bytes()
        assert headers["cache-status"].startswith("oca; hit")
        status, headers, body = http_request(port, "/titles/1001/720p/seg_00001.m4s", {"Range": "bytes=0-99"})
        assert status == 206 and body == (title / "720p" / "seg_00001.m4s").read_bytes()[:100]
        assert headers["cache-status"].startswith("oca; hit")
        printed = log.read_text()
        assert "imported 84 objects" in printed and "0 failed, 0 skipped" in printed, printed
        assert f"curl -i http://127.0.0.1:{port}/titles/1001/master.m3u8" in printed
        # the access log the sample config names, in the work directory
        deadline = time.monotonic() + 10
        log_file = workdir / "access.log"
        while True:  # a record names its key more than once: count records, not mentions
            text = log_file.read_text() if log_file.exists() else ""
            records = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
            if sum(1 for r in records if str(r.get("key") or "").startswith("titles/1001")) >= 2:
                break
            assert time.monotonic() < deadline, "the access log never got both requests"
            time.sleep(0.1)
        assert {(r["key"], r["cache"]) for r in records if r["key"]} == {("titles/1001/master.m3u8", "hit"),
                                                             ("titles/1001/720p/seg_00001.m4s", "hit")}
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            for pid in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                      text=True).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            process.kill()
            process.wait()
