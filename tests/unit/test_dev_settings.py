"""How `coupon-issuer dev` tells a second terminal where it is, and what it listens on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from app.config import DEV_ENV_FILE, Settings, setting_origin
from app.local.dev_env import announced, dev_environment
from app.local.processes import preferred_port
from app.local.stack import child_env, dev_listen


def test_the_local_api_listens_on_loopback_unless_told_otherwise() -> None:
    assert dev_listen(Settings(_env_file=None))["api_host"] == "127.0.0.1"
    assert "api_host" not in dev_listen(Settings(_env_file=None, api_host="0.0.0.0"))


def test_the_usual_api_port_when_free_another_when_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert preferred_port(taken) != taken
        updates = dev_listen(Settings(_env_file=None, api_port=taken))
        assert "api_port" not in updates  # asked for explicitly: kept (and fails loudly if busy)
    assert preferred_port(taken) == taken  # free again


def test_the_environment_names_the_urls_and_what_differs_never_secrets() -> None:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap="127.0.0.1:40001",
        topic="mine",
        admin_token="secret-token",
    )
    env = dev_environment(settings)
    assert env["COUPON_KAFKA_BOOTSTRAP"] == "127.0.0.1:40001"
    assert env["COUPON_DATABASE_URL"] == settings.database_url
    assert env["COUPON_REDIS_URL"] == settings.redis_url
    assert env["COUPON_TOPIC"] == "mine"
    assert "COUPON_DLQ_TOPIC" not in env  # the default
    assert "COUPON_REDIS_CLUSTER" not in env
    assert "secret-token" not in "".join(env.values())
    on_a_cluster = dev_environment(settings.model_copy(update={"redis_cluster": True}))
    assert Settings(
        _env_file=None, redis_cluster=on_a_cluster["COUPON_REDIS_CLUSTER"]
    ).redis_cluster


def test_commands_run_where_the_stack_runs_read_its_file_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("COUPON_KAFKA_BOOTSTRAP", "COUPON_TOPIC"):
        monkeypatch.delenv(key, raising=False)
    stack = Settings(_env_file=None, kafka_bootstrap="127.0.0.1:40002", topic="t-file")
    with announced(stack, tmp_path / DEV_ENV_FILE):
        second_terminal = Settings()
        assert second_terminal.kafka_bootstrap == "127.0.0.1:40002"
        assert setting_origin(second_terminal, "kafka_bootstrap") == f"from {DEV_ENV_FILE}"
        monkeypatch.setenv("COUPON_TOPIC", "t-env")
        assert Settings().topic == "t-env"
        assert setting_origin(Settings(), "topic") == "from the environment"
    assert not (tmp_path / DEV_ENV_FILE).exists()  # removed when the stack stops
    assert Settings().kafka_bootstrap == "127.0.0.1:9092"


def test_a_file_another_stack_rewrote_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / DEV_ENV_FILE
    with announced(Settings(_env_file=None, kafka_bootstrap="127.0.0.1:40003"), target):
        target.write_text("COUPON_KAFKA_BOOTSTRAP=127.0.0.1:40004\n")
    assert target.exists()


def test_nothing_to_start_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import app.local.servers as local_servers
    from app.unreachable import diagnose

    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(ConnectionError) as raised:
        local_servers.RedisServer(directory=tmp_path).start()
    problem = diagnose(raised.value, Settings(_env_file=None))
    assert problem is not None and problem.setting == "COUPON_REDIS_URL"
    assert str(problem).endswith(
        "does not answer, and redis-server is not installed"
        " (Debian: apt-get install redis-server; `make system-deps`)"
    )


def test_a_port_left_in_time_wait_is_free_to_a_server() -> None:
    """make run keeps its usual ports across a quick restart: connections the last run closed
    sit in TIME_WAIT, which a server binding with SO_REUSEADDR (all of ours do) ignores."""
    import socket

    from app.local.processes import free_port, port_free

    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side of the connection is in TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old probe did, and why it moved the API
    assert port_free(port)


def test_ports_handed_out_are_never_handed_out_again() -> None:
    """Servers are told their port before they bind it: two asked one after the other must not
    get the same one (the kernel offers a port again once the probe's socket is closed; among a
    few thousand draws from its ~28,000 it repeats one almost surely)."""
    from app.local.processes import free_port

    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_a_child_gets_every_setting_or_only_those_off_the_defaults_and_the_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COUPON_PRODUCER_LINGER_MS", raising=False)
    monkeypatch.delenv("COUPON_API_WORKERS", raising=False)
    settings = Settings(_env_file=None, topic="mine", api_workers=1)
    every = child_env(settings)
    assert every["COUPON_TOPIC"] == "mine"
    assert every["COUPON_PRODUCER_LINGER_MS"] == str(settings.producer_linger_ms)
    # another revision of the code keeps its own defaults, but not of what is kept
    own = child_env(settings, {"PYTHONPATH": "/elsewhere"}, keep=("api_workers",))
    assert own["COUPON_TOPIC"] == "mine"
    assert "COUPON_PRODUCER_LINGER_MS" not in own
    assert own["COUPON_API_WORKERS"] == "1"
    assert own["PYTHONPATH"] == "/elsewhere"
