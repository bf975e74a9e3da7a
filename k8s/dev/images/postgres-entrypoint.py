#!/usr/local/bin/python3
"""The postgres image's interface on Debian's PostgreSQL 15: on an empty ``PGDATA``, initdb with
``POSTGRES_USER`` (default postgres) as superuser and ``POSTGRES_PASSWORD`` (required unless
``POSTGRES_HOST_AUTH_METHOD=trust``), clients from any address with a password, and the database
``POSTGRES_DB`` (default: the user's name); then ``postgres`` listening on every address."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def initialise(data: Path, env: dict[str, str]) -> None:
    user = env.get("POSTGRES_USER") or "postgres"
    database = env.get("POSTGRES_DB") or user
    method = env.get("POSTGRES_HOST_AUTH_METHOD") or "scram-sha-256"
    password = env.get("POSTGRES_PASSWORD", "")
    if not password and method != "trust":
        sys.exit("POSTGRES_PASSWORD is not set (or POSTGRES_HOST_AUTH_METHOD=trust)")
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".pw") as pwfile:
        pwfile.write(password or "unused")
        pwfile.flush()
        subprocess.run(
            [
                "initdb",
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={pwfile.name}",
                "-E",
                "UTF8",
                "--auth-local=trust",
                f"--auth-host={method}",
            ],
            check=True,
        )
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all all {method}\n")
    if database != "postgres":
        # Single-user mode: no server to start and stop just to create one database.
        name = database.replace('"', '""')
        subprocess.run(
            ["postgres", "--single", "-j", "-D", str(data), "postgres"],
            input=f'CREATE DATABASE "{name}";\n',
            text=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def main() -> int:
    args = sys.argv[1:] or ["postgres"]
    if args[0].startswith("-"):
        args = ["postgres", *args]
    if args[0] == "postgres":
        data = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
        if not (data / "PG_VERSION").exists():
            initialise(data, dict(os.environ))
        args = ["postgres", "-c", "listen_addresses=*", *args[1:]]
    os.execvp(args[0], args)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
