"""Cluster ids that a Kafka command-line tool could misread (CI failed once on one)."""

from __future__ import annotations

import base64
from pathlib import Path

from app.local.kafka import KafkaNode
from app.local.kafka_jars import new_cluster_id


def test_new_ids_never_start_with_a_dash() -> None:
    # 1 in 64 random ids would; 4,000 draws miss a dash-led id with chance (63/64)**4000 ~ 1e-27.
    ids = [new_cluster_id() for _ in range(4000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_a_dash_led_id_still_formats(tmp_path: Path) -> None:
    # 0xF8 puts 0b111110 (62, '-' in URL-safe base64) in the first six bits.
    dash_led = base64.urlsafe_b64encode(b"\xf8" + bytes(range(15))).rstrip(b"=").decode()
    assert dash_led.startswith("-")
    node = KafkaNode(directory=tmp_path / "node", cluster_id=dash_led)
    node.format()
    meta = (tmp_path / "node" / "data" / "meta.properties").read_text()
    assert f"cluster.id={dash_led}" in meta
