"""What a Kubernetes node changes on the machine, recorded before and undone after.

The node (harness/node.py) runs as root on a machine shared with CI and other people, so every
change it makes is one this module knows: a bridge of its own with a private range, a route for
the Service range onto that bridge, iptables rules of its own (the DROPs that keep pod and
Service traffic on the machine) and of the kubelet's and kube-proxy's (``KUBE-*`` chains),
sysctls the kubelet, kube-proxy and the bridge plugin set, cgroups (``kubepods``), mounts (netns,
volumes, container root filesystems) and directories the kubelet and containerd create at fixed
paths. :func:`record` writes what was there before into ``RUN_DIR``; :func:`clean` kills what is
left of the node's processes and undoes everything, from that record, and is safe to run again
(``make node-clean`` after a killed run; every start runs it first).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = Path("/run/coupon-node")  # containerd state, kubelet root, CNI, sockets: all ours
LOCK = Path("/run/lock/coupon-node.lock")  # one node on the machine at a time
BRIDGE = "cnode0"
POD_CIDR = "10.213.0.0/24"
GATEWAY = "10.213.0.1"  # the bridge's address: pods reach the host (and the API server) here
SERVICE_CIDR = "10.96.0.0/24"  # harness.kube.SERVICE_CIDR
OWN_CHAIN = "COUPON-NODE"
# Chains of the kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY), kube-proxy (KUBE-SERVICES, ...) and ours.
CHAIN_PREFIXES = ("KUBE-", OWN_CHAIN)
TABLES = ("filter", "nat", "mangle", "raw")
# What the kubelet (setupKernelTunables), kube-proxy, the bridge plugin and we may set.
SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
)
# Fixed paths the kubelet, containerd and the CNI library create whatever their configuration.
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/etc/kubernetes",
    "/opt/containerd",
    "/var/lib/containerd",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler")
RUNTIME_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc")


def sh(*cmd: str, check: bool = True, input: str | None = None) -> str:
    """Run a command; its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, input=input, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = " ".join(sysctl_path(key).read_text().split())
    return values


# Where to look for a sysctl the node changed that SYSCTLS lacks (teardown's check): these trees,
# per-interface entries only for "all" and "default" (an interface of ours goes with it).
SYSCTL_TREES = (
    "kernel",
    "vm",
    "net/core",
    "net/ipv4",
    "net/ipv6/conf",
    "net/bridge",
    "net/netfilter",
)
VOLATILE_SYSCTLS = frozenset({"kernel.ns_last_pid"})


def every_sysctl() -> dict[str, str]:
    """Every writable sysctl under SYSCTL_TREES (about 600 here)."""
    values = {}
    for tree in SYSCTL_TREES:
        for directory, subdirs, files in os.walk(Path("/proc/sys") / tree):
            parts = Path(directory).relative_to("/proc/sys").parts
            if "conf" in parts or "neigh" in parts:
                subdirs[:] = [d for d in subdirs if d in ("all", "default") or len(parts) < 2]
            for name in files:
                path = Path(directory) / name
                with contextlib.suppress(OSError):
                    if path.stat().st_mode & 0o200:
                        key = ".".join(path.relative_to("/proc/sys").parts)
                        values[key] = " ".join(path.read_text().split())
    return {k: v for k, v in values.items() if k not in VOLATILE_SYSCTLS}


def external_interface() -> str:
    """The device of the default route (never touched: rules only match it)."""
    route = sh("ip", "-4", "route", "show", "default").split()
    return route[route.index("dev") + 1] if "dev" in route else "eth0"


@dataclass(frozen=True)
class Before:
    """The machine as the node found it."""

    sysctls: dict[str, str]
    existing_paths: list[str]
    nft_tables: list[str]
    forwarding: bool
    links: list[str]
    every_sysctl: dict[str, str]

    @property
    def path(self) -> Path:
        return RUN_DIR / "before.json"


def links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def nft_tables() -> list[str]:
    return sorted(line.strip() for line in sh("nft", "list", "tables").splitlines() if line.strip())


def record() -> Before:
    """Write what the node may change, before it changes anything (once per run)."""
    before = Before(
        sysctls=read_sysctls(),
        existing_paths=[p for p in FIXED_PATHS if os.path.lexists(p)],
        nft_tables=nft_tables(),
        forwarding=read_sysctls().get("net.ipv4.ip_forward") == "1",
        links=links(),
        every_sysctl=every_sysctl(),
    )
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    before.path.write_text(json.dumps(before.__dict__, indent=2))
    return before


def recorded() -> Before | None:
    path = RUN_DIR / "before.json"
    if not path.exists():
        return None
    return Before(**json.loads(path.read_text()))


# --- the network: bridge, route, our DROPs ---------------------------------------------------


def set_up_network(before: Before) -> None:
    """The bridge (gateway address, up), the Service range routed onto it, and our DROPs.

    The DROPs sit in the mangle table, which the kubelet and kube-proxy leave alone, so their
    ACCEPTs (KUBE-FORWARD) come after them: nothing forwarded leaves through the external
    interface while the node runs (forwarding was off before, the bridge plugin turns it on),
    and nothing from or to the pod and Service ranges leaves it at all.
    """
    ext = external_interface()
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY)
    forward = [f"-o {ext} -j DROP"] if not before.forwarding else []
    forward += [f"-i {BRIDGE} -o {ext} -j DROP", f"-s {POD_CIDR} -o {ext} -j DROP"]
    post = [f"-s {POD_CIDR} -o {ext} -j DROP"]
    post += [f"-d {cidr} -o {ext} -j DROP" for cidr in (POD_CIDR, SERVICE_CIDR)]
    for hook, rules in (("FORWARD", forward), ("POSTROUTING", post)):
        chain = f"{OWN_CHAIN}-{hook[:4]}"
        sh("iptables", "-t", "mangle", "-N", chain)
        for rule in rules:
            sh("iptables", "-t", "mangle", "-A", chain, *rule.split())
        sh("iptables", "-t", "mangle", "-I", hook, "1", "-j", chain)


def remove_rules() -> list[str]:
    """Delete every rule jumping to a node chain, then the chains (iptables and ip6tables)."""
    removed = []
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in TABLES:
            saved = sh(f"{tool}-save", "-t", table, check=False)
            ours = {
                line.split()[0][1:]
                for line in saved.splitlines()
                if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)
            }
            for line in saved.splitlines():
                words = shlex.split(line) if line.startswith("-A ") else []
                if words and words[1] not in ours and any(w in ours for w in words):
                    sh(tool, "-t", table, "-D", *words[1:], check=False)
                    removed.append(f"{tool} -t {table} {line}")
            for chain in ours:
                sh(tool, "-t", table, "-F", chain, check=False)
            for chain in ours:
                sh(tool, "-t", table, "-X", chain, check=False)
                removed.append(f"{tool} -t {table} -X {chain}")
    return removed


def remove_new_nft_tables(before: Before) -> None:
    """iptables-nft leaves the tables it created behind, empty once our rules are gone: drop
    those that were not there before and hold no rule (someone else's stay)."""
    for table in set(nft_tables()) - set(before.nft_tables):
        family, name = table.split()[1:3]
        listing = json.loads(sh("nft", "-j", "list", "table", family, name, check=False) or "{}")
        if not any("rule" in item for item in listing.get("nftables", [])):
            sh("nft", "delete", "table", family, name, check=False)


# --- processes, mounts, cgroups, links, paths ---------------------------------------------------


def node_processes() -> Iterator[int]:
    """Processes of the node left running: our containerd and its shims (their command lines
    name RUN_DIR), and the node's binaries from .tools/kube/bin (only one node runs at a time)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            text = b" ".join(argv).decode(errors="replace")
            program = argv[0].decode(errors="replace")
            if Path(program).name in NODE_BINARIES and "/.tools/kube/bin/" in program:
                yield int(entry.name)
            elif Path(program).name in RUNTIME_BINARIES and str(RUN_DIR) in text:
                yield int(entry.name)


def processes_in_cgroups() -> Iterator[int]:
    """Processes inside a ``kubepods`` cgroup: the pods' containers."""
    for tasks in CGROUP_ROOT.glob("*/kubepods/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            yield from (int(p) for p in tasks.read_text().split())


def kill_all(timeout: float = 10) -> None:
    """SIGKILL the containers first (they outlive their shims), then the node's processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set(processes_in_cgroups()) | set(node_processes())
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise RuntimeError(f"node processes would not die: {sorted(pids)}")


def our_mounts() -> list[str]:
    """Mount points under the node's directories (netns, volumes, root filesystems), deepest first."""
    roots = (str(RUN_DIR), *FIXED_PATHS, str(NODE_DATA))
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == r or point.startswith(r + "/") for r in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_all() -> None:
    for _ in range(3):
        points = our_mounts()
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                sh("umount", "-l", point, check=False)


def remove_cgroups() -> list[str]:
    """Remove every ``kubepods`` cgroup, children first (rmdir: a cgroup is not a directory)."""
    left = []
    for top in CGROUP_ROOT.glob("*/kubepods"):
        for directory in sorted(top.glob("**/"), key=lambda p: -len(p.parts)):
            try:
                directory.rmdir()
            except OSError:
                left.append(str(directory))
    return left


def remove_links() -> None:
    """The veths on our bridge (those of dead netns are gone already), then the bridge."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        return
    for port in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir():
        sh("ip", "link", "delete", port.name, check=False)
    sh("ip", "link", "delete", BRIDGE, check=False)


def remove_paths(before: Before) -> None:
    """The fixed paths that were not there before the node ran."""
    for path in FIXED_PATHS:
        if path not in before.existing_paths and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)


def restore_sysctls(before: Before) -> dict[str, tuple[str, str]]:
    """Write back every recorded sysctl that differs; returns {key: (was, restored)}."""
    changed = {}
    now = read_sysctls()
    for key, value in before.sysctls.items():
        if now.get(key) != value:
            with contextlib.suppress(OSError):
                sysctl_path(key).write_text(value)
            changed[key] = (now.get(key, "?"), value)
    return changed


NODE_DATA = Path(__file__).resolve().parent.parent / ".tools" / "node" / "containerd"


def clean() -> list[str]:
    """Undo the node: processes, mounts, cgroups, links, rules, paths, sysctls. Idempotent.

    Returns what it found to undo (empty when the machine was clean)."""
    before = recorded()
    found: list[str] = []
    pids = set(processes_in_cgroups()) | set(node_processes())
    pids.discard(os.getpid())
    if pids:
        found.append(f"killed {len(pids)} processes")
    kill_all()
    if points := our_mounts():
        found.append(f"unmounted {len(points)} mounts")
    unmount_all()
    deadline = time.monotonic() + 10
    while (left := remove_cgroups()) and time.monotonic() < deadline:
        time.sleep(0.2)  # a killed task leaves its cgroup moments after the signal
    if left:
        raise RuntimeError(f"cgroups left: {left[:5]}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"removed the bridge {BRIDGE}")
    remove_links()
    found += remove_rules()
    if before is not None:
        remove_new_nft_tables(before)
        found += [f"restored {k}: {a} -> {b}" for k, (a, b) in restore_sysctls(before).items()]
        remove_paths(before)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    return found


def leftovers(before: Before) -> list[str]:
    """What differs from ``before`` (empty when teardown left nothing): the check of teardown."""
    problems = []
    if pids := sorted(set(node_processes()) | set(processes_in_cgroups())):
        problems.append(f"processes {pids}")
    if points := our_mounts():
        problems.append(f"mounts {points[:5]}")
    if cgroups := list(CGROUP_ROOT.glob("*/kubepods")):
        problems.append(f"cgroups {cgroups[:5]}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        problems.append(f"bridge {BRIDGE}")
    if new_links := sorted(set(links()) - set(before.links)):
        problems.append(f"links {new_links}")
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) and any(p in sh(tool, check=False) for p in CHAIN_PREFIXES):
            problems.append(f"{tool}: node chains left")
    if nft_tables() != before.nft_tables:
        problems.append(f"nft tables {nft_tables()} (were {before.nft_tables})")
    if (now := read_sysctls()) != before.sysctls:
        problems.append(
            "sysctls "
            + ", ".join(
                f"{k}={now.get(k)} (was {v})" for k, v in before.sysctls.items() if now.get(k) != v
            )
        )
    now_all = every_sysctl()
    if changed := sorted(k for k, v in before.every_sysctl.items() if now_all.get(k) != v):
        problems.append("other sysctls " + ", ".join(f"{k}={now_all.get(k)}" for k in changed))
    new_paths = [p for p in FIXED_PATHS if os.path.lexists(p) and p not in before.existing_paths]
    if new_paths:
        problems.append(f"paths {new_paths}")
    if RUN_DIR.exists():
        problems.append(f"{RUN_DIR}")
    return problems
