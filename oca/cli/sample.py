"""`oca sample [DIR]` (what `make run` runs): write a synthetic sample title and a loopback box config under
DIR, import the title into the box's cache, then serve it in the foreground like `oca serve`."""

from __future__ import annotations

import click

from oca.cli.cache import import_
from oca.cli.serve import serve
from oca.content.sample import write_sample


@click.command()
@click.argument("workdir", default="run", type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="The data port, on 127.0.0.1.")
@click.option("--admin-port", type=click.IntRange(1, 65535), default=8081, show_default=True,
              help="The admin port, on 127.0.0.1.")
@click.pass_context
def sample(ctx: click.Context, workdir: str, port: int, admin_port: int) -> None:
    """Serve a synthetic sample title (valid HLS/DASH playlists, segments that are not video) from a box on
    127.0.0.1, without a control plane or tokens; WORKDIR holds its config, cache, state and access log."""
    made = write_sample(workdir, port, admin_port)
    click.echo(f"sample cache: {made.content} (synthetic bytes, not video)", err=True)
    ctx.invoke(import_, config_path=made.config, directory=made.content, hot=False, pin=False, as_json=False,
               raw_bytes=False, timeout=600.0)
    base = f"http://127.0.0.1:{port}"
    for line in (f"serving on {base}/  (admin http://127.0.0.1:{admin_port}/status; access log {made.access_log})",
                 f"try:  curl -i {base}/{made.title}/master.m3u8",
                 f"      curl -s -D- -o /dev/null -H 'Range: bytes=0-99' {base}/{made.title}/720p/seg_00001.m4s",
                 "Ctrl-C stops the box."):
        click.echo(line, err=True)
    ctx.invoke(serve, config_path=made.config, loop_kind="uvloop", check=False)
