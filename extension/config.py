"""The researcher side's settings: where the hospital's gateway is and which keys to trust.

Every setting is a traitlet (`c.Bedside.<name>` in `jupyter_server_config.py`) with an environment
fallback, in the style of jupyter_server's `GatewayClient`. When `gateway_url` is set the extension
configures `GatewayClient` for you, so one block of settings sends the notebook's kernels to the
hospital.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable


class Bedside(LoggingConfigurable):
    """Settings of the bedside server extension (researcher side)."""

    gateway_url = Unicode(
        "",
        help="""URL of the hospital's Enterprise Gateway (http(s)://host:port). When set, every
        kernel of this server runs at the hospital and every message is checked and recorded in
        the session ledger. (BEDSIDE_GATEWAY_URL env var)""",
    ).tag(config=True)

    @default("gateway_url")
    def _gateway_url_default(self) -> str:
        return os.environ.get("BEDSIDE_GATEWAY_URL", "")

    gateway_token = Unicode(
        "",
        help="""Token the hospital issued for its gateway, sent as `Authorization: token ...`.
        (BEDSIDE_GATEWAY_TOKEN env var)""",
    ).tag(config=True)

    @default("gateway_token")
    def _gateway_token_default(self) -> str:
        return os.environ.get("BEDSIDE_GATEWAY_TOKEN", "")

    client_cert = Unicode(
        "",
        help="""TLS client certificate (PEM) for mutual TLS with the gateway.
        (BEDSIDE_CLIENT_CERT env var)""",
    ).tag(config=True)

    @default("client_cert")
    def _client_cert_default(self) -> str:
        return os.environ.get("BEDSIDE_CLIENT_CERT", "")

    client_key = Unicode(
        "",
        help="""Private key (PEM) of the TLS client certificate. (BEDSIDE_CLIENT_KEY env var)""",
    ).tag(config=True)

    @default("client_key")
    def _client_key_default(self) -> str:
        return os.environ.get("BEDSIDE_CLIENT_KEY", "")

    ca_certs = Unicode(
        "",
        help="""CA bundle (PEM) that signed the gateway's certificate.
        (BEDSIDE_CA_CERTS env var)""",
    ).tag(config=True)

    @default("ca_certs")
    def _ca_certs_default(self) -> str:
        return os.environ.get("BEDSIDE_CA_CERTS", "")

    custodian_key = Unicode(
        "",
        help="""The hospital custodian's verifier key (C2SP vkey `name+hexid+base64`). Receipts
        must be signed by it. When empty, the key the hospital names in its reply to the session
        intent is pinned for the session (trust on first use) and recorded in the ledger header.
        (BEDSIDE_CUSTODIAN_KEY env var)""",
    ).tag(config=True)

    @default("custodian_key")
    def _custodian_key_default(self) -> str:
        return os.environ.get("BEDSIDE_CUSTODIAN_KEY", "")

    researcher_key_file = Unicode(
        "",
        help="""File holding the researcher's Ed25519 signing key. Created on first use; default
        `<jupyter data dir>/bedside/researcher.key`. (BEDSIDE_RESEARCHER_KEY env var)""",
    ).tag(config=True)

    @default("researcher_key_file")
    def _researcher_key_file_default(self) -> str:
        return os.environ.get(
            "BEDSIDE_RESEARCHER_KEY", str(Path(jupyter_data_dir()) / "bedside" / "researcher.key")
        )

    researcher_name = Unicode(
        "",
        help="""Name in the researcher's verifier key (used only when the key is created).
        (BEDSIDE_RESEARCHER_NAME env var; default `researcher`)""",
    ).tag(config=True)

    @default("researcher_name")
    def _researcher_name_default(self) -> str:
        return os.environ.get("BEDSIDE_RESEARCHER_NAME", "researcher")

    sessions_dir = Unicode(
        "",
        help="""Where the researcher's copy of each session ledger (and its openings) is kept;
        default `<jupyter data dir>/bedside/sessions`. (BEDSIDE_SESSIONS_DIR env var)""",
    ).tag(config=True)

    @default("sessions_dir")
    def _sessions_dir_default(self) -> str:
        return os.environ.get(
            "BEDSIDE_SESSIONS_DIR", str(Path(jupyter_data_dir()) / "bedside" / "sessions")
        )

    intent_file = Unicode(
        "",
        help="""JSON or YAML file with the session intent (purpose, cohort, model job, policy id,
        budget, expected kernel environment digest), used when the notebook's metadata has no
        `bedside.intent`. (BEDSIDE_INTENT env var)""",
    ).tag(config=True)

    @default("intent_file")
    def _intent_file_default(self) -> str:
        return os.environ.get("BEDSIDE_INTENT", "")

    intent_timeout = Float(
        30.0,
        help="""Seconds to wait for the hospital's answer to the session intent before the
        session is marked unmonitored and its messages unverified.""",
    ).tag(config=True)

    connect_timeout = Float(
        120.0,
        help="""Seconds to wait for the gateway to start a kernel and open its websocket. A
        guarded kernel starts a sandbox and loads the hospital's data, slower than a plain
        kernel; GatewayClient's own 40 s default is too short on a busy gateway. Applied to
        GatewayClient.connect_timeout and request_timeout unless those are configured.""",
    ).tag(config=True)

    anchor_rpc = Unicode(
        "",
        help="""EVM JSON-RPC URL that `POST /bedside/sessions/{id}/anchor` sends the checkpoint
        hash to, e.g. http://127.0.0.1:8545 (the demo's ganache) or a Polygon endpoint.
        (BEDSIDE_ANCHOR_RPC env var)""",
    ).tag(config=True)

    @default("anchor_rpc")
    def _anchor_rpc_default(self) -> str:
        return os.environ.get("BEDSIDE_ANCHOR_RPC", "")

    anchor_contract = Unicode(
        "",
        help="""Address of the BedsideAnchor contract on that chain (printed by
        `bedside ledger deploy`). (BEDSIDE_ANCHOR_CONTRACT env var)""",
    ).tag(config=True)

    @default("anchor_contract")
    def _anchor_contract_default(self) -> str:
        return os.environ.get("BEDSIDE_ANCHOR_CONTRACT", "")

    anchor_key_file = Unicode(
        "",
        help="""File holding the hex secp256k1 private key that submits anchors (mode 0600; it
        pays the gas and is named in the event). (BEDSIDE_ANCHOR_KEY env var)""",
    ).tag(config=True)

    @default("anchor_key_file")
    def _anchor_key_file_default(self) -> str:
        return os.environ.get("BEDSIDE_ANCHOR_KEY", "")

    anchor_timeout = Float(
        600.0,
        help="""Seconds to wait for an anchor transaction to be mined.""",
    ).tag(config=True)

    def sessions_path(self) -> Path:
        return Path(self.sessions_dir)
