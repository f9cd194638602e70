"""The sample box behind `oca sample` (`make run`): one synthetic title and a loopback box config to serve it.

Rules kept here:
- The title is `oca/content/synthetic.py`'s fallback package (valid HLS/DASH playlists over non-video bytes):
  nothing here writes content of its own.
- Everything lives under one work directory: the content to import (`sample/titles/<id>/`), the config
  (`oca.yaml`), and what the box writes (`state/`, `cache/`, `access.log`, relative to the config); a second
  run rewrites the same files, so it serves the same bytes.
- The box listens on 127.0.0.1 only, without tokens: a sample for curl, with no control plane to mint them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from oca.content.ladder import title_specs
from oca.content.synthetic import write_synthetic

DURATION = 20  # seconds of the title: 10 segments per rendition, 84 files, about 2.4 MiB in all

CONFIG = """\
# Written by `oca sample` (`make run`): a box on loopback serving the sample cache under this directory.
box: {{id: sample-box, site: sample-site}}
server: {{listen: "127.0.0.1:{port}", workers: 2}}
admin: {{listen: "127.0.0.1:{admin_port}"}}
storage:
  state_dir: state
  tiers:
    - {{name: ssd, path: cache/ssd, capacity: 256MiB}}
    - {{name: hdd, path: cache/hdd, capacity: 1GiB}}
log: {{access_log: access.log}}
tokens: {{required: false}}  # a local sample for curl: no control plane hands out tokens here
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """Where `write_sample` put things: import `content`, then serve with `config`."""

    workdir: str
    content: str  # the directory to import: its files' paths are the cache keys (titles/<id>/...)
    config: str
    title: str  # the title's key prefix, titles/<id>
    port: int
    admin_port: int

    @property
    def access_log(self) -> str:
        return os.path.join(self.workdir, "access.log")


def write_sample(workdir: str, port: int, admin_port: int) -> Sample:
    """Write the synthetic title and the box config under `workdir` (created if missing)."""
    workdir = os.path.abspath(workdir)
    spec = title_specs(1, DURATION, synthetic=True)[0]
    title = f"titles/{spec.id}"
    content = os.path.join(workdir, "sample")
    write_synthetic(os.path.join(content, *title.split("/")), spec)
    config = os.path.join(workdir, "oca.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(CONFIG.format(port=port, admin_port=admin_port))
    return Sample(workdir, content, config, title, port, admin_port)
