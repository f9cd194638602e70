"""`oca firmware keygen|build|install|status|roll|abort`: signed release bundles, installing one on a box,
and fleet roll-outs run by the control plane."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

import click

from oca.cli.control import control_options
from oca.cli.options import config_option, timeout_option
from oca.config import load_box_config
from oca.config.units import parse_duration
from oca.wire.admin_client import AdminClient
from oca.wire.control_client import ControlClient


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
@timeout_option(300.0)
def install(config_path: str, bundle: str, as_json: bool, timeout: float) -> None:
    """Upload FILE to the box's admin API; it verifies it, starts the new release beside the old one and
    keeps it only if healthy. Returns once the box serves the new release (or refused it)."""
    client = AdminClient.for_box(load_box_config(config_path), timeout)
    with open(bundle, "rb") as fh:
        answer = client.request("POST", "/firmware", upload=fh)
    _show(answer, as_json)


@firmware.command("status")
@click.argument("roll", required=False)
@click.option("--config", "config_path", metavar="FILE", default=None,
              help="Show this box's firmware instead (its configuration file).")
@click.option("--watch", is_flag=True, help="Redraw every second until the roll-out is over.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@control_options
def status(client: ControlClient, roll: str | None, config_path: str | None, watch: bool, as_json: bool) -> None:
    """Roll-outs (the latest, or ROLL) with their waves and boxes; with --config, one box's releases."""
    if config_path is not None:
        box = AdminClient.for_box(load_box_config(config_path), client.timeout)
        _show(box.request("GET", "/firmware"), as_json)
        return
    if roll is None:
        rollouts = client.request("GET", "/v1/rollouts")["rollouts"]
        if as_json and (not watch or not rollouts):
            click.echo(json.dumps(rollouts, indent=2))
            return
        if not rollouts:
            click.echo("no roll-outs yet")
            return
        if as_json and not watch:
            click.echo(json.dumps(rollouts, indent=2))
            return
        roll = rollouts[0]["id"]
    _watch(client, str(roll), watch, as_json)


@firmware.command("roll")
@click.argument("bundle", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--waves", default="1,10%,50%,100%", show_default=True,
              help="Cumulative wave sizes: counts or shares of the fleet; the last must be 100%.")
@click.option("--max-unavailable", default="10%", show_default=True,
              help="Boxes out of service at once (a count or a share of the fleet), lost boxes included.")
@click.option("--bake", default="60s", show_default=True, help="How long each batch runs before its gate.")
@click.option("--in-fill-window", is_flag=True, help="Start batches only inside the fleet's fill window.")
@click.option("--watch", is_flag=True, help="Follow the roll-out until it is over.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@control_options
def roll(client: ControlClient, bundle: str, waves: str, max_unavailable: str, bake: str, in_fill_window: bool,
         watch: bool, as_json: bool) -> None:
    """Roll the signed bundle FILE over the fleet: per box drain, upload, upgrade, bake, gate, undrain, in
    waves; a failed gate rolls that wave back and halts. Returns once the control plane has the plan."""
    try:
        seconds = parse_duration(float(bake) if bake.replace(".", "", 1).isdigit() else bake)  # 60 = 60s
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bake") from None
    query = {"waves": waves, "max_unavailable": max_unavailable, "bake": f"{seconds:g}",
             "in_fill_window": "1" if in_fill_window else "0"}
    with open(bundle, "rb") as fh:
        answer = client.request("POST", "/v1/rollouts", query=query, upload=fh)
    if watch:
        _watch(client, answer["id"], True, as_json)
        return
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    sizes = [sum(len(batch) for batch in wave["batches"]) for wave in answer["waves"]]
    skipped = answer.get("spec", {}).get("skipped")
    click.echo(f"roll-out {answer['id']}: {answer['version']} on {sum(sizes)} boxes in waves of "
               f"{', '.join(map(str, sizes))}" + (f" (already at {answer['version']}, skipped: {skipped})"
                                                 if skipped else "")
               + f"; follow it with: oca firmware status {answer['id']} --watch")


@firmware.command("abort")
@click.argument("roll")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@control_options
def abort(client: ControlClient, roll: str, as_json: bool) -> None:
    """Stop roll-out ROLL after the step under way; drained boxes are undrained, upgraded ones stay."""
    answer = client.request("POST", f"/v1/rollouts/{roll}/abort")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"roll-out {answer['id']}: abort requested ({answer['state']})")


FINAL = ("done", "halted", "aborted")


def _watch(client: ControlClient, roll: str, watch: bool, as_json: bool) -> None:
    """Show the roll-out, again each second while --watch and it is not over; exit 1 if it halted/aborted."""
    shown = ""
    while True:
        answer = client.request("GET", f"/v1/rollouts/{roll}")
        text = json.dumps(answer, indent=2) if as_json else _render(answer)
        if text != shown:
            if watch and shown and not as_json and sys.stdout.isatty():
                click.echo("\x1b[H\x1b[2J", nl=False)  # redraw in place on a terminal
            click.echo(text)
            shown = text
        if not watch or answer["state"] in FINAL:
            break
        time.sleep(1.0)
    if answer["state"] in ("halted", "aborted"):
        sys.exit(1)


def _render(answer: dict[str, Any]) -> str:
    lines = [f"roll-out {answer['id']}: {answer['version']} {answer['state'].upper()}"
             f"  ({answer['steps_done']}/{answer['steps_total']} steps; by {answer['operator']})"]
    if answer.get("reason"):
        lines.append(f"  {answer['reason']}")
    current = answer.get("current")
    if current:
        lines.append(f"  now: wave {current['wave']} batch {current['batch']}: {current['kind']} "
                     f"{current['box'] or ''}".rstrip())
    if answer.get("waiting"):
        lines.append(f"  waiting {answer['waiting']['seconds']:.0f}s: {answer['waiting']['why']}")
    rows = [("WAVE", "BATCH", "BOX", "FROM", "STATE")]
    rows += [(str(b["wave"]), str(b["batch"]), b["box"], b.get("from_version") or "-", b["state"])
             for b in answer.get("boxes", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
              for row in rows]
    return "\n".join(lines)


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    state = answer["firmware"]
    click.echo(f"version {answer['version']} (previous {answer['previous_version'] or '-'}; "
               f"kept {', '.join(answer['releases'])})")
    click.echo(f"firmware {state['state']}" + (f": {state['reason']}" if state.get("reason") else ""))
