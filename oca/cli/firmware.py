"""`oca firmware keygen|build|install|status`: signed release bundles, and installing one on a box."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import click

from oca.admin.client import AdminClient
from oca.cli.options import config_option
from oca.config import load_box_config


@click.group()
def firmware() -> None:
    """Build signed release bundles; install one on a box with zero downtime."""


@firmware.command("keygen")
@click.argument("path", metavar="KEY.pem")
def keygen(path: str) -> None:
    """Create an Ed25519 signing key KEY.pem (mode 0600) and its public half KEY.pub.pem for the boxes'
    firmware.trusted_keys_file."""
    from oca.firmware.keys import write_keypair

    public, kid = write_keypair(path)
    click.echo(f"key {kid}: private {path}, public {public}")


@firmware.command("build")
@click.option("--version", "version", required=True, help="The release's version (PEP 440).")
@click.option("--signing-key", required=True, metavar="KEY.pem", help="Ed25519 private key (oca firmware keygen).")
@click.option("--out", required=True, metavar="FILE", help="Where to write the bundle.")
@click.option("--min-version", default=None, help="Refuse to install on boxes running an older version.")
@click.option("--rollback", is_flag=True, help="A signed downgrade: boxes running a newer version accept it.")
@click.option("--source", default=None, metavar="DIR", help="The checkout to build (default: this oca's).")
@click.option("--wheel", default=None, metavar="FILE", help="Bundle this wheel instead of building one.")
def build(version: str, signing_key: str, out: str, min_version: str | None, rollback: bool, source: str | None,
          wheel: str | None) -> None:
    """Build a wheel of this project reporting VERSION and write it, a manifest and its signature to FILE."""
    from oca.firmware.build import build_wheel, pack_bundle, source_root
    from oca.firmware.keys import load_signing_key

    key = load_signing_key(signing_key)  # before the build: a bad key costs no wheel
    with tempfile.TemporaryDirectory(prefix="oca-firmware-") as tmp:
        path = wheel or build_wheel(source or source_root(), version, tmp)
        manifest = pack_bundle(path, version, key, out, min_version=min_version, rollback=rollback)
    click.echo(f"{out}: oca {manifest.version} ({manifest.payload_name}, {manifest.payload_size} bytes, "
               f"sha256 {manifest.payload_sha256[:16]}...)")


@firmware.command("install")
@config_option
@click.argument("bundle", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def install(config_path: str, bundle: str, as_json: bool) -> None:
    """Upload FILE to the box's admin API; it verifies it, starts the new release beside the old one and
    keeps it only if healthy. Returns once the box serves the new release (or refused it)."""
    client = AdminClient.for_box(load_box_config(config_path))
    with open(bundle, "rb") as fh:
        answer = client.request("POST", "/firmware", upload=fh)
    _show(answer, as_json)


@firmware.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(config_path: str, as_json: bool) -> None:
    """The release the box runs, the previous one, the releases kept and the installer's state."""
    _show(AdminClient.for_box(load_box_config(config_path)).request("GET", "/firmware"), as_json)


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    state = answer["firmware"]
    click.echo(f"version {answer['version']} (previous {answer['previous_version'] or '-'}; "
               f"kept {', '.join(answer['releases'])})")
    click.echo(f"firmware {state['state']}" + (f": {state['reason']}" if state.get("reason") else ""))
