"""What `coupon-issuer dev` hands to a second terminal: its settings in DEV_ENV_FILE (which every
command started in that directory reads) and the one ``export`` line for anywhere else."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from app.config import Settings

# What a command in a second terminal needs to find the local stack (never secrets).
_WHERE = ("kafka_bootstrap", "database_url", "redis_url")
_NAMES = (
    "redis_cluster",
    "db_schema",
    "redis_prefix",
    "topic",
    "dlq_topic",
    "consumer_group",
    "api_port",
)


def dev_environment(settings: Settings) -> dict[str, str]:
    """``COUPON_*`` values that point another command at this stack: the URLs always, the
    names and the API port when they differ from the defaults."""
    defaults = Settings.model_fields
    env = {}
    for name in (*_WHERE, *_NAMES):
        value = getattr(settings, name)
        if name in _WHERE or value != defaults[name].default:
            env[f"COUPON_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def announced(settings: Settings, env_file: Path) -> Iterator[None]:
    """Write the stack's settings to ``env_file`` (every command run here reads it) while it
    runs; remove it at the end unless another stack has overwritten it since."""
    content = "".join(f"{k}={v}\n" for k, v in dev_environment(settings).items())
    header = "# written by `coupon-issuer dev` while it runs; removed when it stops\n"
    env_file.write_text(header + content)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if env_file.read_text() == header + content:
                env_file.unlink()
