"""Hosts for the fault suite: one network namespace per host, joined by veth pairs to a bridge
in the root namespace, whose address is where the suite's private PostgreSQL, Redis, S3 proxy
and webhook receiver listen. A partition is an iptables DROP rule inside the host's namespace;
a skewed clock is libfaketime preloaded into that host's processes (namespaces share the
kernel's clock). Everything made here is removed again, also when a run is interrupted."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import ServiceMissing

FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def require_tools() -> None:
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        raise ServiceMissing(f"{', '.join(missing)} not installed (apt-get install iproute2 iptables)")
    if not FAKETIME_LIBRARY.is_file():
        raise ServiceMissing(f"{FAKETIME_LIBRARY} is missing (apt-get install libfaketime)")
    if os.geteuid() != 0:
        raise ServiceMissing("network namespaces need root")


@dataclass
class Host:
    """One machine of the cluster: a namespace with its own address and firewall."""

    name: str
    namespace: str
    address: str
    gateway: str
    clock_offset_s: int = 0
    cut_ports: list[int] = field(default_factory=list)

    def wrapper(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def environment(self) -> dict[str, str]:
        if not self.clock_offset_s:
            return {}
        # FAKETIME_DONT_RESET: child processes (prefork pools) keep the same offset.
        return {
            "LD_PRELOAD": str(FAKETIME_LIBRARY),
            "FAKETIME": f"{self.clock_offset_s:+d}s",
            "FAKETIME_DONT_RESET": "1",
            "FAKETIME_NO_CACHE": "1",
        }

    def _rules(self, action: str, port: int) -> None:
        inside = ["ip", "netns", "exec", self.namespace, "iptables", "-w"]
        _run(*inside, action, "OUTPUT", "-d", self.gateway, "-p", "tcp", "--dport", str(port), "-j", "DROP")
        _run(*inside, action, "INPUT", "-s", self.gateway, "-p", "tcp", "--sport", str(port), "-j", "DROP")

    def cut(self, port: int) -> None:
        """Drop every packet between this host and the service on ``port``, both ways: open
        connections hang as they do behind a failed switch, new ones time out."""
        self._rules("-I", port)
        self.cut_ports.append(port)

    def heal(self, port: int) -> None:
        self._rules("-D", port)
        self.cut_ports.remove(port)


class HostNetwork:
    """A bridge and its hosts, on a /24 of its own so parallel runs never share one."""

    def __init__(self) -> None:
        require_tools()
        self.tag = uuid.uuid4().hex[:5]
        octet = 100 + int(self.tag, 16) % 150
        self.prefix = f"10.213.{octet}"
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"vxb{self.tag}"
        self.hosts: list[Host] = []
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str, clock_offset_s: int = 0) -> Host:
        index = len(self.hosts) + 10
        namespace = f"vx{self.tag}{name}"
        outside, inside = f"vh{self.tag}{index}", f"vp{self.tag}{index}"
        address = f"{self.prefix}.{index}"
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", outside, "master", self.bridge, "up")
        _run("ip", "link", "set", inside, "netns", namespace)
        ns = ["ip", "netns", "exec", namespace]
        _run(*ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
        _run(*ns, "ip", "link", "set", inside, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        host = Host(name, namespace, address, self.gateway, clock_offset_s)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=30)
        self.hosts.clear()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
