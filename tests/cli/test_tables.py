"""What CLI tables look like: a header row, sizes in IEC units (exact bytes with --bytes), and `fill run
--dry-run` as one line of counts (the commands only with --verbose or --json)."""

from __future__ import annotations

import json
from typing import Any

from oca.cli.format import iec, sizes, table
from tests.cli.test_exit_codes import Servers, run, servers

__all__ = ["servers"]  # the fixture, shared with the exit-code tests


def test_iec_sizes() -> None:
    assert [iec(n) for n in (0, 512, 1023, 1024, 1536, 3_250_586, 5 * 2**30, 3 * 2**50)] == [
        "0 B", "512 B", "1023 B", "1.0 KiB", "1.5 KiB", "3.1 MiB", "5.0 GiB", "3.0 PiB"]
    assert sizes(True)(3_250_586) == "3250586" and sizes(False)(3_250_586) == "3.1 MiB"
    assert table([("A", "LONGER"), ("xyz", "1")]) == ["A    LONGER", "xyz  1"]


def test_catalog_ls_has_a_header_and_iec_sizes(tmp_path: Any, servers: Servers) -> None:
    shown = run(tmp_path, "catalog ls", servers.answering, servers).result
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == ["TITLE", "RENDITIONS", "FILES", "SIZE", "PACKAGES", "COUNTRIES"]
    assert row.split() == ["42", "4", "22", "3.1", "MiB", "hls+dash", "*"]
    raw = run(tmp_path, "catalog ls", servers.answering, servers, "--bytes").result
    assert raw.stdout.splitlines()[1].split()[3] == "3250586"


def test_steer_explain_has_headers(tmp_path: Any, servers: Servers) -> None:
    shown = run(tmp_path, "steer explain", servers.answering, servers).result
    assert shown.returncode == 0, shown.stderr
    lines = [line.split() for line in shown.stdout.splitlines()]
    assert lines[1] == ["#", "PATHWAY", "URL"] and lines[2] == ["1.", "a1", "http://127.0.0.11:8080"]
    assert lines[3] == ["BOX", "SITE", "TIER", "REASON"] and lines[4] == ["a1", "site-a", "site", "live,", "healthy"]


def test_cache_ls_has_a_header_and_iec_sizes(tmp_path: Any, servers: Servers) -> None:
    shown = run(tmp_path, "cache ls", servers.answering, servers).result
    assert shown.returncode == 0, shown.stderr
    assert [line.split() for line in shown.stdout.splitlines()] == [["KEY", "SIZE", "TIER", "PINNED"],
                                                                    ["titles/1/f0", "100", "B", "hdd", "no"]]
    assert shown.stderr == "1 objects, 100 B\n"


def test_fill_dry_run_is_one_line_of_counts(tmp_path: Any, servers: Servers) -> None:
    shown = run(tmp_path, "fill run", servers.answering, servers).result
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ("dry run, box b1: plan 1 files (100 B, window always); 1 already there, 0 to fetch "
                            "(0 B), 1 to pin, 0 to unpin; nothing done\n")
    verbose = run(tmp_path, "fill run", servers.answering, servers, "--verbose").result
    lines = verbose.stdout.splitlines()
    assert lines[0] == shown.stdout.strip() and len(lines) > 1
    assert all(line.startswith("  would     {") for line in lines[1:])
    as_json = json.loads(run(tmp_path, "fill run", servers.answering, servers, "--json").result.stdout)
    assert as_json["commands"] and as_json["kept_files"] == 1
