"""`make run`: write a small sample cache under a directory, then serve it on loopback.

The sample is one synthetic title (valid HLS playlists, segment files of deterministic non-video bytes):
enough to try GET, HEAD, ranges and conditionals with curl. Real video arrives with the lab.
"""

from __future__ import annotations

import hashlib
import os
import sys

SAMPLE_CONFIG = """\
# Written by `make run`: a box on loopback serving the sample cache under this directory.
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

TITLE = "titles/1000"
SEGMENTS = 10


def write_sample_content(root: str) -> None:
    """One title: a multivariant playlist, one rendition's media playlist, an init segment and segments."""
    files: dict[str, bytes] = {
        f"{TITLE}/master.m3u8": (
            b"#EXTM3U\n#EXT-X-VERSION:7\n"
            b'#EXT-X-STREAM-INF:BANDWIDTH=1500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"\n'
            b"720p/index.m3u8\n"
        ),
        f"{TITLE}/720p/init.mp4": _filler("init", 1024),
    }
    media = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD",
             '#EXT-X-MAP:URI="init.mp4"']
    for i in range(1, SEGMENTS + 1):
        name = f"seg_{i:05d}.m4s"
        files[f"{TITLE}/720p/{name}"] = _filler(name, 256 * 1024 + i)
        media += ["#EXTINF:2.000,", name]
    media.append("#EXT-X-ENDLIST")
    files[f"{TITLE}/720p/index.m3u8"] = ("\n".join(media) + "\n").encode()
    for key, data in files.items():
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def _filler(seed: str, size: int) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def main(argv: list[str]) -> int:
    workdir = os.path.abspath(argv[0] if argv else "run")
    port = int(os.environ.get("OCA_PORT", "8080"))
    admin_port = int(os.environ.get("OCA_ADMIN_PORT", "8081"))
    content = os.path.join(workdir, "sample")
    config = os.path.join(workdir, "oca.yaml")
    os.makedirs(workdir, exist_ok=True)
    write_sample_content(content)
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(SAMPLE_CONFIG.format(port=port, admin_port=admin_port))
    oca = os.path.join(os.path.dirname(sys.executable), "oca")
    print(f"sample cache: {content} (synthetic bytes, not video)\n", flush=True)
    if os.system(f"{oca} cache import --config {config} {content}") != 0:
        return 1
    base = f"http://127.0.0.1:{port}"
    print(f"\nserving on {base}/  (admin http://127.0.0.1:{admin_port}/status; access log {workdir}/access.log)")
    print(f"try:  curl -i {base}/{TITLE}/master.m3u8")
    print(f"      curl -s -D- -o /dev/null -H 'Range: bytes=0-99' {base}/{TITLE}/720p/seg_00001.m4s")
    print("Ctrl-C stops the box.\n", flush=True)
    os.execv(oca, [oca, "serve", "--config", config])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
