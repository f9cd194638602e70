"""`oca lab up`: a whole CDN on loopback (origin, control plane, boxes in two sites), filled, until Ctrl-C;
`--control-replicas N` runs N control-plane replicas on the lab's own PostgreSQL behind HAProxy."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import click

from oca.lab import Lab, LabConfig
from oca.lab.haproxy import CHECK_INTERVAL_MS, FALL, RISE


@click.group()
def lab() -> None:
    """Run the local lab."""


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


class _Signals:
    """The first SIGINT/SIGTERM raises _Stop wherever the lab is; later ones are ignored while it stops."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.fired:
            self.fired = True
            raise _Stop(signal.Signals(signum).name)


@lab.command("up")
@click.option("--titles", type=int, default=3, show_default=True, help="Sample titles (made once, then reused).")
@click.option("--boxes", type=int, default=3, show_default=True, help="Boxes, split over site A and site B.")
@click.option("--dir", "workdir", default="run/lab", show_default=True, type=click.Path(file_okay=False),
              help="Where the content, configs, caches and logs go.")
@click.option("--duration", type=int, default=30, show_default=True, help="Seconds per title.")
@click.option("--synthetic", is_flag=True, help="Synthetic titles (valid playlists, non-video bytes), no ffmpeg.")
@click.option("--port", "control_port", type=int, default=8090, show_default=True,
              help="The control plane's port on 127.0.0.1 (a free one if taken; 0 = any).")
@click.option("--box-port", "box_ports", type=int, default=8080, show_default=True,
              help="Each box's data port on its own 127.0.0.x address, admin = +1; 0 = free ports on 127.0.0.1.")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes per box.")
@click.option("--control-replicas", type=int, default=1, show_default=True,
              help="Control-plane replicas: 1 on SQLite; N >= 2 share the lab's own PostgreSQL behind HAProxy "
                   "on --port.")
def up(titles: int, boxes: int, workdir: str, duration: int, synthetic: bool, control_port: int, box_ports: int,
       workers: int, control_replicas: int) -> None:
    """Start the lab, fill it, print what is where and the URLs to open; Ctrl-C stops everything."""
    if not 1 <= boxes <= 40:
        raise click.BadParameter(f"must be 1-40, got {boxes}", param_hint="--boxes")
    if not 1 <= workers <= 16:
        raise click.BadParameter(f"must be 1-16, got {workers}", param_hint="--workers")
    if not 1 <= control_replicas <= 9:
        raise click.BadParameter(f"must be 1-9, got {control_replicas}", param_hint="--control-replicas")
    config = LabConfig(workdir=workdir, titles=titles, boxes=boxes, duration=duration, synthetic=synthetic,
                       control_port=control_port, box_ports=box_ports, workers=workers,
                       control_replicas=control_replicas)
    handler = _Signals()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    the_lab = Lab(config, say=lambda line: click.echo(f"lab: {line}", err=True))
    try:
        with the_lab:
            click.echo(report(the_lab), nl=True)
            sys.stdout.flush()
            while True:
                for line in the_lab.check():
                    click.echo(f"lab: {line}", err=True)
                time.sleep(0.5)
    except (KeyboardInterrupt, _Stop) as exc:
        click.echo(f"lab: stopped ({exc or 'SIGINT'})", err=True)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def report(lab: Lab) -> str:
    """The table of what is where, then the URLs and commands to try."""
    first = lab.titles[0]
    a, b = lab.site_clients["site-a"], lab.site_clients["site-b"]
    header = lab.client_header
    boxes = "\n".join(f"  {box.id:4} {box.site}  data {box.data_url}  admin {box.admin_url}  log {box.log_path}"
                      for box in lab.boxes)
    kind = "SYNTHETIC (not video)" if lab.content is not None and lab.content.synthetic else "H.264/AAC"
    control = f"{lab.control_url}   (operator token in {lab.paths.operator_token})"
    if len(lab.replicas) > 1:
        control = (f"{lab.control_url}   HAProxy (checks GET /healthz every {CHECK_INTERVAL_MS} ms, fall {FALL} "
                   f"rise {RISE}; {lab.paths.haproxy_config}), operator token in {lab.paths.operator_token}\n"
                   + "\n".join(f"  replica {r.name}     {r.url}   log {r.log_path}" for r in lab.replicas))
        postgres = lab.describe()["postgres"]
        if postgres is not None:
            control += f"\n  postgresql     {postgres['url']}   (password in {postgres['dir']}/password)"
    return f"""
What is where (objects/files, bytes, live = every file):
{lab.table()}

Boxes:
{boxes}
Sites: site-a clients {a} (127.0.1.0/24), site-b clients {b} (127.0.2.0/24, parent site-a); titles are {kind}

Open:
  lab page       {lab.page_url}
  HLS            {lab.master_url(first)}
  DASH           {lab.mpd_url(first)}
  control plane  {control}
  lab API        {lab.api_url}/api/lab
  origin         {lab.origin_url}

Files (everything under {lab.paths.workdir}/):
  content        {lab.paths.content}/
  control log    {lab.control_log_path}
  origin log     {lab.origin_log_path}

Try (the header says which site the client is in):
  curl -s -H '{header}: {b}' {lab.master_url(first)}
  ffmpeg -v error -headers '{header}: {a}' -i {lab.master_url(first)} -map 0:v:0 -map 0:a:0 -f null -
  OCA_CONTROL_TOKEN=$(cat {lab.paths.operator_token}) oca steer explain --control {lab.control_url} \\
      --ip {b} --title {first}

Ctrl-C stops everything."""
