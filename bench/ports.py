"""
ports.py — a free TCP port for a benchmark's servers, the rule the tests use.

A port is picked below the kernel's ephemeral range (ip_local_port_range) and
never twice in one run: a port bind(0) hands out comes from that range, and an
outgoing connection (wrk's own) may take it as its local port before the hub
binds it.
"""
import random
import socket

_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing holds now, below the ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(1000):
        port = random.randrange(10000, min(low, 32768))
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")
