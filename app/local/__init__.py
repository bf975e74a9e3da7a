"""The embedded local stack of `make run` and of the tests: servers on loopback (PostgreSQL, Redis,
Apache Kafka nodes), the processes it starts and stops, and what it tells a second terminal.

No service process imports this package (only ``coupon-issuer dev`` does, lazily), and the
production images leave it out.
"""
