"""Lag-based autoscaling of the issue consumers: policy (pure), lag reader, kopf operator."""
