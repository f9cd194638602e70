"""`oca content make OUTDIR`: sample titles (real H.264/AAC, or a synthetic fallback) for tests and the lab."""

from __future__ import annotations

import json
import os
import time

import click

from oca.cli.format import iec
from oca.content import MadeContent, MadeTitle, make_content
from oca.content.ladder import FIRST_TITLE_ID, MAX_TITLES, MIN_DURATION
from oca.content.progress import ContentProgress


@click.group()
def content() -> None:
    """Make sample content."""


@content.command("make")
@click.argument("outdir", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--titles", "count", type=int, default=3, show_default=True,
              help=f"How many titles (1-{MAX_TITLES}), numbered from {FIRST_TITLE_ID}.")
@click.option("--duration", type=int, default=30, show_default=True,
              help=f"Seconds per title (whole seconds, at least {MIN_DURATION}).")
@click.option("--synthetic", is_flag=True, help="Write the fallback (valid playlists, non-video bytes) "
              "even where ffmpeg is installed.")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Titles encoded at once (one ffmpeg already keeps two cores busy).")
@click.option("--json", "as_json", is_flag=True, help="Print catalog.json's titles and the outcome as JSON.")
def make(outdir: str, count: int, duration: int, synthetic: bool, jobs: int, as_json: bool) -> None:
    """Write sample titles under OUTDIR (titles/<id>/, catalog.json); titles already made are reused.

    Each title is encoded once per rendition (H.264 360p, 720p, 1080p; AAC 128k; 2 s segments) and
    packaged as HLS fMP4 (master.m3u8), DASH (manifest.mpd) and HLS TS (ts/master.m3u8). Without ffmpeg
    (or with --synthetic) the titles are synthetic: valid playlists, segments that are not video.
    Progress goes to stderr: a line per title and step, one every 10 s while a title encodes, with the
    time left.
    """
    started = time.monotonic()
    heading = [f"content: making {count} title(s) of {duration} s in {os.path.abspath(outdir)}"]

    def say(line: str) -> None:  # the heading once, before the first step (not for bad arguments)
        while heading:
            click.echo(heading.pop(), err=True)
        click.echo(line, err=True)

    shown = ContentProgress(count, duration, say)
    made = make_content(outdir, count, duration, synthetic=synthetic, jobs=jobs, progress=shown.media,
                        step=shown.step)
    seconds = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({"outdir": made.outdir, "catalog": made.catalog, "synthetic": made.synthetic,
                               "fallback": made.fallback, "seconds": round(seconds, 2),
                               "titles": [dict(t.record, reused=t.reused) for t in made.titles]}, indent=2))
        return
    for title in made.titles:
        click.echo(_line(title))
    click.echo(_summary(made, seconds))
    if made.fallback is not None:
        click.echo(f"oca: warning: SYNTHETIC content ({made.fallback}): the playlists are valid but the "
                   "segments are not video", err=True)


def _line(title: MadeTitle) -> str:
    record = title.record
    what = "synthetic" if title.spec.synthetic else record.get("pattern", "?")
    where = ",".join(record.get("countries") or []) or "everywhere"
    how = "reused" if title.reused else f"made in {title.seconds:.1f}s"
    return (f"{record['id']}: {how} ({what}, {record['duration']} s, {record['segments']} segments, "
            f"{len(record['renditions'])} renditions, {iec(record['size'])}, plays {where}) "
            f"{record['path']}/")


def _summary(made: MadeContent, seconds: float) -> str:
    kind = ("SYNTHETIC (not video: " + (made.fallback or "reused") + ")") if made.synthetic else "H.264/AAC"
    reused = sum(t.reused for t in made.titles)
    count = f"{len(made.titles)} title{'s' if len(made.titles) != 1 else ''}"
    return (f"{count} ({reused} reused), {kind}, in {made.outdir} in {seconds:.1f}s; "
            f"catalog {made.catalog}")
