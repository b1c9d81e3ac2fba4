"""bedside.extension: the researcher side, a jupyter_server 2.x extension.

It sends the notebook's kernels to the hospital's Enterprise Gateway, signs every execute
request, checks the hospital's receipt on every message that comes back, keeps the researcher's
copy of the session ledger and cosigns its checkpoints; a REST API under `/bedside/` lists,
seals and serves the sessions. Enabled by default by
`jupyter-config/jupyter_server_config.d/bedside.json`; configured through `c.Bedside.*`
(`bedside.extension.config.Bedside`).
"""

from __future__ import annotations

import atexit
import os
from typing import Any

__all__ = ["_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "bedside.extension"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    """Point jupyter_server at the hospital before its kernel managers are built.

    Linking runs before `ServerApp.init_configurables`, which is where `GatewayClient` is read
    and the gateway kernel managers are chosen, so settings made here take effect.
    """
    from .config import Bedside
    from .connection import BedsideWebSocketConnection, LocalNoDelayConnection

    bedside = Bedside(parent=serverapp)
    serverapp._bedside = bedside
    if not bedside.gateway_url:
        serverapp.log.info("bedside: no Bedside.gateway_url set; kernels run locally, unrecorded")
        if not serverapp.config.GatewayClient.get("url"):
            serverapp.kernel_websocket_connection_class = LocalNoDelayConnection
        return
    gateway = serverapp.config.GatewayClient
    gateway.url = bedside.gateway_url
    if bedside.gateway_token:
        gateway.auth_token = bedside.gateway_token
    for ours, theirs in (
        ("client_cert", "client_cert"),
        ("client_key", "client_key"),
        ("ca_certs", "ca_certs"),
    ):
        value = getattr(bedside, ours)
        if value:
            setattr(gateway, theirs, value)
    for name, env in (
        ("connect_timeout", "JUPYTER_GATEWAY_CONNECT_TIMEOUT"),
        ("request_timeout", "JUPYTER_GATEWAY_REQUEST_TIMEOUT"),
    ):
        if name not in gateway and env not in os.environ:
            setattr(gateway, name, bedside.connect_timeout)
    serverapp.kernel_websocket_connection_class = BedsideWebSocketConnection


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .config import Bedside
    from .connection import REGISTRY_KEY, BedsideWebSocketConnection
    from .handlers import handlers
    from .sessions import SessionRegistry

    bedside = getattr(serverapp, "_bedside", None) or Bedside(parent=serverapp)
    registry = SessionRegistry(bedside)
    # Module extensions get no stop hook: flush every ledger copy when the server exits.
    atexit.register(registry.close)
    web_app = serverapp.web_app
    web_app.settings[REGISTRY_KEY] = registry
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    if bedside.gateway_url and not issubclass(
        serverapp.kernel_websocket_connection_class, BedsideWebSocketConnection
    ):
        serverapp.log.warning(
            "bedside: ServerApp.kernel_websocket_connection_class is overridden; "
            "messages to the hospital are not checked"
        )
    serverapp.log.info(
        "bedside: kernels go to %s; session ledgers in %s",
        bedside.gateway_url or "(local kernels)",
        registry.root,
    )
