"""``python -m dashboards.src [--check]``: write (or check) dashboards/*.json."""

from __future__ import annotations

import sys

from dashboards.src.render import main

sys.exit(main())
