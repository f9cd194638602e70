"""The claim oca/serve/connection.py's header makes, checked on the source: it is the one module that sends to a
client (os.sendfile on the client socket, direct sends with MSG_MORE). A new sendfile elsewhere must be looked at
and either moved there or added here with the reason it does not send to a client."""

from __future__ import annotations

import ast
import pathlib

from tests.conftest import ROOT

# module -> why its os.sendfile is not a send to a client
NOT_TO_A_CLIENT: dict[str, str] = {}


def _uses(name: str) -> dict[str, int]:
    """Source file (relative to the checkout) -> how many times it names `os.<name>` / `socket.<name>`."""
    found: dict[str, int] = {}
    for package in ("oca", "control", "fill"):
        for path in sorted(pathlib.Path(ROOT, package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            hits = sum(1 for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == name
                       and isinstance(node.value, ast.Name) and node.value.id in ("os", "socket"))
            if hits:
                found[str(path.relative_to(ROOT))] = hits
    return found


def test_only_the_connection_sends_files_to_clients() -> None:
    users = _uses("sendfile")
    assert "oca/serve/connection.py" in users
    assert set(users) - {"oca/serve/connection.py"} == set(NOT_TO_A_CLIENT)


def test_only_the_connection_sends_with_msg_more() -> None:
    assert set(_uses("MSG_MORE")) == {"oca/serve/connection.py"}
