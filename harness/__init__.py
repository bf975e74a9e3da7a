"""The one process harness of the tests and the bench (neither owns it; neither is in the image).

Built on ``app.local.stack`` (``spawn``, ``child_env``, ``prepare``, ``local_systems``), which starts
the real parts for ``make run``; this package adds what only tests and the bench need:

- ``isolated(base, label, **overrides)``: settings with a schema, Redis prefix, topics, group and
  ports of their own, so runs sharing one PostgreSQL / Redis / broker do not interfere;
- ``ServiceProcesses``: an API and N consumers for such settings, waits for readiness and for the
  group to own every partition, stops consumers before the API (``tests.stack.Stack`` adds the
  test client and assertions on top; the bench measures their CPU);
- ``wait_until``: the one poll-a-condition-until-a-deadline loop (sync or async condition);
- ``partition_of`` and friends: coupon ids that reach every partition.

It lives at the top level, beside ``bench/`` and ``tests/``, because both import it; setuptools
installs only ``app*``, so like the bench it runs from the repository root.
"""

from harness.partitions import coupon_ids_covering, create_covering, partition_of
from harness.processes import ServiceProcesses, isolated, scrape
from harness.wait import wait_until, wait_until_blocking

__all__ = [
    "ServiceProcesses",
    "coupon_ids_covering",
    "create_covering",
    "isolated",
    "partition_of",
    "scrape",
    "wait_until",
    "wait_until_blocking",
]
