"""Audit the locked requirements with pip-audit and say how much could really be audited.

pip-audit quietly skips packages whose vulnerability data it cannot fetch; where the
vulnerability service is out of reach it "finds nothing" without having looked. This wrapper
fails on any known vulnerability and prints how many packages were actually checked.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            "requirements.lock",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed to run:\n{done.stderr}", file=sys.stderr)
        return 1
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    vulnerable = [d for d in deps if d.get("vulns")]
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep['version']}: {ids}")
    audited = len(deps) - len(skipped)
    print(
        f"pip-audit: {audited} of {len(deps)} locked packages audited, {len(vulnerable)} vulnerable"
    )
    if skipped and not audited:
        print("pip-audit: the vulnerability service was out of reach: NOTHING was audited here")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
