"""Enterprise Gateway's side of a remote kernel launch, run with EG 3.3's own code in `.venv-eg`.

Usage: `.venv-eg/bin/python _eg_response_side.py KERNEL_ID`. EG's `ResponseManager` (the RSA key
pair, the response socket, `_decode_payload`) prints `{"response_address", "public_key"}` as the
first line of stdout, then the connection info it decrypted from the launcher. After that each
stdin line is a request sent with EG's own `RemoteProcessProxy` comm-port code: `signal N`
(`send_signal`) or `shutdown` (`shutdown_listener`); each is answered with `ok` on stdout.

This file runs in EG's environment (jupyter_client<7, pyzmq<25): it imports nothing of bedside.
"""

import asyncio
import json
import logging
import sys

from enterprise_gateway.services.processproxies.processproxy import (
    RemoteProcessProxy,
    ResponseManager,
)


class _CommOnly(RemoteProcessProxy):
    """A RemoteProcessProxy reduced to what the comm port needs (no kernel manager)."""

    def confirm_remote_startup(self):  # pragma: no cover - never launched
        raise NotImplementedError


def comm_proxy(kernel_id, connection_info):
    proxy = object.__new__(_CommOnly)
    proxy.kernel_id = kernel_id
    proxy.log = logging.getLogger("eg-side")
    proxy.tunnel_processes = {}
    proxy.comm_ip = connection_info["ip"]
    proxy.comm_port = int(connection_info["comm_port"])
    return proxy


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(kernel_id):
    manager = ResponseManager.instance()
    manager.register_event(kernel_id)
    say({"response_address": manager.response_address, "public_key": manager.public_key})
    while True:  # as RemoteProcessProxy.receive_connection_info is polled by EG
        try:
            info = await manager.get_connection_info(kernel_id)
            break
        except TimeoutError:
            continue
    say(info)
    proxy = comm_proxy(kernel_id, info)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        words = line.split()
        if words[0] == "signal":
            result = proxy.send_signal(int(words[1]))
            say({"ok": True, "result": result})
        elif words[0] == "shutdown":
            proxy.shutdown_listener()
            say({"ok": True})


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    asyncio.run(main(sys.argv[1]))
