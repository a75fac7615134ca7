"""Joining or starting Ray, with an answer in seconds: an address where nothing listens is one line
(Ray itself retries for minutes without a word), as is a local instance of no CPUs."""

from __future__ import annotations

import os
import socket
from typing import Any

from synscale.errors import ConfigError

CONNECT_TIMEOUT = 10.0  # seconds a Ray head has to accept a TCP connection


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False, flag: str = "--ray-address",
             **kwargs: Any) -> Any:
    """`ray.init` of the cluster at `address` (else RAY_ADDRESS, else a local instance of `num_cpus` CPUs), after
    checking that something listens there; returns the ray module."""
    import ray

    given = address or os.environ.get("RAY_ADDRESS") or None
    where = f"{flag} {address}" if address else f"RAY_ADDRESS={given}"
    if given and given not in ("auto", "local"):
        check_listening(given, where)
    if num_cpus is not None and num_cpus < 1 and not given:
        raise ConfigError(f"a local Ray instance of {num_cpus} CPUs runs nothing; give --ray-cpus 1 or more")
    try:
        ray.init(address=address, num_cpus=num_cpus if not given else None, include_dashboard=False,
                 log_to_driver=not quiet, configure_logging=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{where if given else 'a local Ray instance'}: {str(e).splitlines()[0]}") from None
    return ray


def check_listening(address: str, where: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Something accepts TCP connections at `address` (`host:port` or `ray://host:port`), within `timeout`."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{where}: expected HOST:PORT (or ray://HOST:PORT), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError | socket.timeout) else (e.strerror or str(e))
        raise ConfigError(f"{where}: nothing answers at {hostport} ({why}); start the cluster there "
                          "(`ray start --head`) or give the address it printed") from None
