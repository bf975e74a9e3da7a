"""One wiring module per process: what it starts, what it owns and how it stops.

The top of the house. ``coupon-issuer <subcommand>`` (app/cli.py) runs one of these; each wires
the real systems (app/adapters) into a room (api, consumer, reconciler, observability,
autoscaling) and no room imports it. The chart's lag-exporter pod runs the lag exporter and the
reconciler side by side (app/processes/lag_exporter.py), neither hosting the other.
"""
