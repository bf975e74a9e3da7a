"""The Grafana dashboards as code, built with Grafana's typed builders (grafana-foundation-sdk).

One module per dashboard (``overview``, ``lag``) on the shared pieces of ``common``;
``python -m dashboards.src`` writes them to dashboards/*.json (see ``render``).
"""
