"""The hot routes' templates, defined once: FastAPI registers them (api/routes.py), the fast path
matches them (api/fast_path.py), and the latency metric is labelled with them."""

from __future__ import annotations

import re

PRESS_ROUTE = "/api/coupons/{coupon_id}/issue/queue"
STATUS_ROUTE = "/api/coupons/{coupon_id}/issues/{user_id}"

# What each path parameter may be for the fast path to take the request (a UUID-shaped coupon id,
# one path segment for the user id); anything else is left to FastAPI's validation.
_PARAMETERS = {"coupon_id": r"([0-9a-fA-F-]{36})", "user_id": r"([^/]+)"}


def matcher(template: str) -> re.Pattern[str]:
    """The regular expression of a route template, a group per path parameter, in order."""
    pattern = re.escape(template)
    for name, group in _PARAMETERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile(f"^{pattern}$")
