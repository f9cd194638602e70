"""`oca token keygen|mint|verify`: make signing keys, sign a token, check one the way a box would.

keygen writes `<kid>.pem` (the private key, mode 0600, never overwritten) and adds the public key to
`jwks.json` in the same directory, keeping the keys already there (rotation with overlap). The PEM goes
to the control plane only; boxes get jwks.json. Errors are OcaErrors: `oca` prints one line and exits
with their code (a rejected token exits 1 with its reason).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from typing import Any

import click

from oca.config.units import parse_duration
from oca.errors import BadRequest, Conflict, OcaError

_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@click.group()
def token() -> None:
    """Make token keys, mint tokens, verify them (RFC 9246 URI Signing)."""


@token.command()
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Where <kid>.pem and jwks.json go.")
@click.option("--kid", default=None, help="Key id (default: <alg>-<date>-<random>).")
@click.option("--alg", type=click.Choice(["EdDSA", "ES256"]), default="EdDSA", show_default=True)
def keygen(out_dir: str, kid: str | None, alg: str) -> None:
    """Make a signing key: <kid>.pem, and its public key in jwks.json.

    Both go in OUT_DIR; keys already in jwks.json are kept (rotation with overlap)."""
    from oca.tokens import generate_private_key, load_jwks, public_jwk, write_private_key

    kid = kid or f"{alg.lower()}-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    if _KID.fullmatch(kid) is None:
        raise BadRequest(f"kid {kid!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    os.makedirs(out_dir, exist_ok=True)
    jwks_path = os.path.join(out_dir, "jwks.json")
    pem_path = os.path.join(out_dir, f"{kid}.pem")
    document: dict[str, Any] = {"keys": []}
    if os.path.exists(jwks_path):
        if kid in load_jwks(jwks_path):
            raise Conflict(f"{jwks_path} already has a key {kid!r}: choose another --kid")
        with open(jwks_path, encoding="utf-8") as file:
            document = json.load(file)
    key = generate_private_key("EdDSA" if alg == "EdDSA" else "ES256")
    try:
        write_private_key(pem_path, key)
    except FileExistsError:
        raise Conflict(f"{pem_path} exists: choose another --kid") from None
    except OSError as exc:
        raise OcaError(f"{pem_path}: cannot write the key: {exc.strerror or exc}") from None
    document["keys"].append(public_jwk(key, kid))
    _write_atomically(jwks_path, json.dumps(document, indent=2) + "\n")
    click.echo(f"kid {kid} ({alg})\nprivate key {pem_path} (keep it on the control plane)\npublic keys {jwks_path}")


@token.command()
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Private key PEM.")
@click.option("--kid", default=None, help="Key id (default: the PEM file's name without .pem).")
@click.option("--title", default=None, help="Scope the token to this title's directory.")
@click.option("--scope", default=None, help="cdniuc value: 'regex:<pattern>' or 'hash:<sha256>' (a bare pattern "
              "means regex:).")
@click.option("--ttl", default="6h", show_default=True, help="Lifetime, e.g. 30m, 6h.")
@click.option("--issuer", default="oca-control", show_default=True)
@click.option("--ip", "client_ip", default=None, help="Bind to a client address or CIDR prefix (cdniip).")
def mint(key_path: str, kid: str | None, title: str | None, scope: str | None, ttl: str, issuer: str,
         client_ip: str | None) -> None:
    """Print a signed token for one title (or scope), valid from now for --ttl."""
    from oca.tokens import load_private_key, mint, title_scope

    if (title is None) == (scope is None):
        raise click.UsageError("give exactly one of --title and --scope")
    if scope is not None and not scope.startswith(("regex:", "hash:")):
        scope = "regex:" + scope
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    key = load_private_key(key_path)
    kid = kid or os.path.basename(key_path).removesuffix(".pem")
    click.echo(mint(key, kid, issuer=issuer, scope=scope or title_scope(title or ""), lifetime=lifetime,
                    now=time.time(), client_ip=client_ip))


@token.command()
@click.option("--jwks", "jwks_path", required=True, type=click.Path(dir_okay=False), help="The box's JWKS file.")
@click.option("--ip", "client_ip", default="", help="The client's address (needed when the token has cdniip).")
@click.option("--issuer", "issuers", multiple=True, help="Trusted issuer (repeatable; default: any).")
@click.argument("jwt")
@click.argument("path")
def verify(jwks_path: str, client_ip: str, issuers: tuple[str, ...], jwt: str, path: str) -> None:
    """Check a token as a box would; print its claims.

    PATH is the content path, e.g. /titles/81239481/720p/seg00001.m4s. A rejection exits 1 with its reason."""
    from oca.tokens import TokenVerifier, load_jwks

    verifier = TokenVerifier(load_jwks(jwks_path), issuers=frozenset(issuers) if issuers else None)
    verified = verifier.verify(jwt, path if path.startswith("/") else "/" + path, client_ip)
    click.echo(json.dumps({
        "kid": verified.kid, "alg": verified.alg, "issuer": verified.issuer, "scope": verified.scope,
        "client_ip": verified.client_ip, "not_before": _iso(verified.not_before), "expires": _iso(verified.expires),
        "claims": dict(verified.claims),
    }, indent=2))


def _iso(seconds: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f}"


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".jwks-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
