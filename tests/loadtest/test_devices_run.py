"""`make loadtest` (loadtest.devices_run) ends by saying where locust's HTML report and CSV files are."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.devices_run import report_lines, report_paths


def test_report_paths_are_what_locust_writes_for_the_prefix(tmp_path: Path) -> None:
    prefix = str(tmp_path / "out" / "loadtest")
    assert report_paths(prefix) == [f"{prefix}.html", f"{prefix}_stats.csv", f"{prefix}_stats_history.csv",
                                    f"{prefix}_failures.csv", f"{prefix}_exceptions.csv"]


def test_a_relative_prefix_is_printed_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert report_paths("out/loadtest")[0] == str(tmp_path / "out" / "loadtest.html")


def test_report_lines_name_every_file_and_say_which_were_not_written(tmp_path: Path) -> None:
    prefix = tmp_path / "loadtest"
    for name in ("loadtest.html", "loadtest_stats.csv", "loadtest_stats_history.csv", "loadtest_failures.csv"):
        (tmp_path / name).write_text("x")
    assert report_lines(str(prefix)) == [
        f"loadtest: HTML report {prefix}.html",
        f"loadtest: CSV         {prefix}_stats.csv",
        f"loadtest: CSV         {prefix}_stats_history.csv",
        f"loadtest: CSV         {prefix}_failures.csv",
        f"loadtest: CSV         {prefix}_exceptions.csv (not written)",
    ]
