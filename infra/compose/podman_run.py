"""Turns services of the compose files into `podman run` arguments, for hosts where a compose
tool cannot bring the topology up as written (infra/compose/smoke.sh uses it).

Why not podman-compose: Debian bookworm's podman 4.3 runs healthchecks from systemd timers, and
a host (or container) without systemd never runs them, so a service stays "starting" and every
`depends_on: {condition: service_healthy}` waits forever. smoke.sh instead starts the services
in dependency order with these arguments and runs each healthcheck itself
(`podman healthcheck run`).

    python infra/compose/podman_run.py --project NAME [-f FILE]... args SERVICE   # NUL-separated
    python infra/compose/podman_run.py --project NAME [-f FILE]... services       # one a line

The files merge as compose merges them (later files override keys, mappings merge, `!reset`
removes a key); `${VAR:-default}`, `${VAR:?message}`, `${VAR}` and `$$` are interpolated from the
environment. Named volumes and the network get the project's name as a prefix; `ports` publish on
127.0.0.1 at the host port given by VOXMILL_PORT_<container port> when set (else not at all);
`deploy` (GPU reservations) is not translated: this is for CPU hosts.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

RESET = object()


class _Loader(yaml.SafeLoader):
    """SafeLoader that knows compose's `!reset` tag."""


_Loader.add_constructor("!reset", lambda loader, node: RESET)


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is RESET:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = value
        return merged
    return override


_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, op, arg = m.group(1), m.group(2), m.group(3)
            current = os.environ.get(name, "")
            if op == ":-":
                return current or arg
            if op == ":?" and not current:
                raise SystemExit(f"compose: {name} is required: {arg}")
            return current

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


def load(files: list[Path]) -> dict[str, Any]:
    """The merged, interpolated compose model of the files."""
    model: dict[str, Any] = {}
    for path in files:
        model = _merge(model, yaml.load(path.read_text(), Loader=_Loader) or {})
    return dict(_interpolate(model))


def _environment(env: Any) -> dict[str, str]:
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, os.environ.get(item, "")) for item in env)
    return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in (env or {}).items()}


def _seconds(duration: str) -> int:
    total = 0
    for amount, unit in re.findall(r"(\d+)(h|m|s)", duration):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def run_args(model: dict[str, Any], service: str, project: str) -> list[str]:
    """`podman run` arguments (after `run`) for one service, detached, on the project's network."""
    spec = model["services"][service]
    args = ["--detach", "--name", f"{project}-{service}", "--network", f"{project}", "--network-alias", service]
    args += ["--label", f"io.podman.compose.project={project}", "--label", f"com.docker.compose.service={service}"]
    for key, value in _environment(spec.get("environment")).items():
        args += ["--env", f"{key}={value}"]
    for volume in spec.get("volumes", []):
        source, _, rest = volume.partition(":")
        if not source.startswith((".", "/")):
            source = f"{project}_{source}"
        args += ["--volume", f"{source}:{rest}"]
    for port in spec.get("ports", []):
        container_port = str(port).rsplit(":", 1)[-1]
        host_port = os.environ.get(f"VOXMILL_PORT_{container_port}")
        if host_port:
            args += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
    restart = spec.get("restart")
    if restart:
        args += ["--restart", restart]
    if "stop_grace_period" in spec:
        args += ["--stop-timeout", str(_seconds(spec["stop_grace_period"]))]
    check = spec.get("healthcheck")
    if check and (check.get("disable") or check["test"][0] == "NONE"):
        args.append("--no-healthcheck")
    elif check:
        # podman 4.3 takes the check as one shell string (a JSON array is not parsed).
        test = check["test"]
        args += ["--health-cmd", test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:])]
        # The interval is for a scheduler; here smoke.sh runs the check itself.
        args += ["--health-interval", "disable", "--health-retries", str(check.get("retries", 3))]
    args.append(spec["image"])
    command = spec.get("command")
    if isinstance(command, str):
        args += ["sh", "-c", command]
    elif command:
        args += [str(c) for c in command]
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--file", action="append", type=Path, required=True)
    parser.add_argument("--project", required=True)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("services")
    one = sub.add_parser("args")
    one.add_argument("service")
    ns = parser.parse_args()
    model = load(ns.file)
    if ns.what == "services":
        for name, spec in model["services"].items():
            if not spec.get("profiles"):
                print(name)
    else:
        sys.stdout.write("\0".join(run_args(model, ns.service, ns.project)) + "\0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
