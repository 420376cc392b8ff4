"""A real S3 endpoint on loopback: moto's standalone server in a thread of this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from moto.server import ThreadedMotoServer


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """Serve S3 on 127.0.0.1 at a free port and yield its endpoint URL; sets no environment."""
    # Port 0 lets the kernel pick the port when binding, so parallel runs never collide.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
