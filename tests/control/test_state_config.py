"""`state:` in control.yaml (sqlite:PATH, postgresql://..., the older {path: ...}) and the control plane opening
the store it names, on SQLite and on the PostgreSQL cluster the tests start."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from control.api import build_app
from control.config import load_control_config
from control.plane import ControlPlane
from control.store.postgres import PostgresStore
from control.store.sqlite import SQLiteStore
from oca.errors import ConfigError
from tests.conftest import OCA, ROOT
from tests.control.fixtures import write_control_config, write_tokens
from tests.postgres import PostgresCluster


def test_sqlite_path_url_and_the_older_mapping(tmp_path: Any) -> None:
    config = load_control_config(write_control_config(str(tmp_path), [], state="sqlite:data/state.db"))
    assert config.state.path == str(tmp_path / "data" / "state.db") and config.state.url is None
    assert config.state.target() == f"sqlite:{tmp_path / 'data' / 'state.db'}"
    config = load_control_config(write_control_config(str(tmp_path), [], state="sqlite:/srv/oca/state.db"))
    assert config.state.target() == "sqlite:/srv/oca/state.db"
    config = load_control_config(write_control_config(str(tmp_path), []))  # the fixtures' {path: ...}
    assert config.state.target() == f"sqlite:{tmp_path / 'state' / 'control.db'}"
    config = load_control_config(write_control_config(
        str(tmp_path), [], state="postgresql://oca@db.example.net:5432/oca", state_password_file="pw"))
    assert config.state.url == "postgresql://oca@db.example.net:5432/oca"
    assert config.state.target() == config.state.url and config.state_password_file == str(tmp_path / "pw")


@pytest.mark.parametrize(("state", "extra", "message"), [
    ("postgresql://oca:hunter2@db:5432/oca", {}, "state: a password in the URL is refused"),
    ("postgresql://oca@db:5432/oca?password=hunter2", {}, "state: a password in the URL is refused"),
    ("postgres://oca:hunter2@db/oca", {}, "state: a password in the URL is refused"),
    ("mysql://root:hunter2@db/oca", {}, "state: expected sqlite:PATH or postgresql://"),
    ("sqlite:", {}, "state: sqlite: needs a path"),
    ("sqlite:state.db", {"state_password_file": "pw"}, "state_password_file: is set but state is not"),
    ({"path": "x.db", "colour": 1}, {}, "state.colour: unknown key"),
])
def test_bad_state_is_one_line_naming_file_and_key(tmp_path: Any, state: Any, extra: dict[str, Any],
                                                   message: str) -> None:
    path = write_control_config(str(tmp_path), [], state=state, **extra)
    with pytest.raises(ConfigError) as caught:
        load_control_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    assert "hunter2" not in text and caught.value.exit_code == 2


def test_serve_with_a_password_in_the_url_exits_2_naming_the_key(tmp_path: Any) -> None:
    path = write_control_config(str(tmp_path), [], state="postgresql://oca:hunter2@127.0.0.1:9/oca")
    done = subprocess.run([OCA, "control", "serve", "--config", path], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and f"{path}: state: a password in the URL is refused" in done.stderr
    assert "hunter2" not in done.stderr


async def test_the_plane_opens_the_store_state_names(tmp_path: Any, postgres_cluster: PostgresCluster) -> None:
    plane = await ControlPlane.open(load_control_config(write_control_config(str(tmp_path), [])))
    assert isinstance(plane.store, SQLiteStore)
    await plane.close()
    database = postgres_cluster.create_database()
    path = write_control_config(str(tmp_path), [], state=postgres_cluster.url(database),
                                state_password_file=postgres_cluster.password_file)
    plane = await ControlPlane.open(load_control_config(path))
    try:
        assert isinstance(plane.store, PostgresStore)
        await plane.save_popularity()
    finally:
        await plane.close()
    assert postgres_cluster.execute("SELECT COUNT(*) FROM popularity", database) == [(1,)]
    path = write_control_config(str(tmp_path), [], state=postgres_cluster.url(database),
                                state_password_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"control\.yaml: state_password_file: cannot read .*missing"):
        await ControlPlane.open(load_control_config(path))


async def test_the_api_answers_503_while_postgresql_is_down_then_recovers(
        tmp_path: Any, aiohttp_client: Any, postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    path = write_control_config(str(tmp_path), [], auth=write_tokens(tmp_path), state=postgres_cluster.url(database),
                                state_password_file=postgres_cluster.password_file)
    plane = await ControlPlane.open(load_control_config(path))
    client = await aiohttp_client(build_app(plane))
    operator = {"Authorization": "Bearer operator-secret"}
    body = {"scope": "prefix", "value": "titles/1/", "reason": "test", "id": "ticket-1"}
    try:
        answer = await client.post("/v1/invalidations", json=body, headers=operator)
        assert answer.status == 201, await answer.text()
        postgres_cluster.stop()
        try:
            answer = await client.post("/v1/invalidations", json={**body, "id": "ticket-2"}, headers=operator)
            error = (await answer.json())["error"]
            assert answer.status == 503 and "unreachable" in error and "\n" not in error, error
        finally:
            postgres_cluster.start()
        answer = await client.post("/v1/invalidations", json={**body, "id": "ticket-2"}, headers=operator)
        assert answer.status == 201, await answer.text()
        assert (await answer.json())["invalidation"]["seq"] == 2
    finally:
        await plane.close()
