"""The benchmark and load test (`coupon-issuer bench`, `make bench`).

Imports nothing itself: the CLI builds its parser from `app.bench.options` on every start, and
the load generator (aiohttp, rich, asyncpg) must not slow down the other subcommands.
"""
