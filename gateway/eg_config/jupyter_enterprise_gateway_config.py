"""Enterprise Gateway configuration for a bedside hospital gateway.

`bedside gateway start` copies this file and `bedside_eg_tuning.py` into the gateway's private
config directory and writes `bedside-eg.json` beside them; Enterprise Gateway loads this file by
name (`jupyter_enterprise_gateway_config.py`) from `JUPYTER_CONFIG_DIR`. The settings live in
JSON, not in generated Python, so no value a custodian types is ever executed as code. It runs
in Enterprise Gateway's own environment (`.venv-eg`): it imports nothing from bedside.
"""

import json
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
_settings = json.loads((_here / "bedside-eg.json").read_text())

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file
app = c.EnterpriseGatewayApp

app.ip = _settings["ip"]
app.port = _settings["port"]
app.port_retries = 0  # a custodian's firewall rule names one port: never wander off it

# A token is mandatory: the gateway starts kernels next to patient records.
_token = Path(_settings["token_file"]).read_text().strip()
if not _token:
    raise SystemExit(f"bedside: the token file {_settings['token_file']} is empty")
app.auth_token = _token

# KERNEL_USERNAME (sent by the client when it starts a kernel) must be in this list. The token
# authenticates; this list only narrows who may start kernels with it.
if _settings.get("authorized_users"):
    app.authorized_users = set(_settings["authorized_users"])
app.unauthorized_users = {"root"}

# Listing kernels shows every user's kernel ids, which is all it takes to attach to them.
app.list_kernels = bool(_settings.get("list_kernels", False))

# Only the kernelspecs bedside wrote: no stock `python3` kernel beside the guarded one.
app.default_kernel_name = _settings["default_kernel"]
c.KernelSpecManager.ensure_native_kernel = False
c.KernelSpecManager.whitelist = set(_settings["kernelspecs"])

for _name in ("certfile", "keyfile", "client_ca"):
    if _settings.get(_name):
        setattr(app, _name, _settings[_name])

if _settings.get("nodelay", True):
    # Stock Enterprise Gateway leaves Nagle's algorithm on for its websockets: every small
    # message then waits for the peer's delayed ACK (~40 ms on loopback). The same module trims
    # the per-message work of the websocket path (bedside_eg_tuning.py); `nodelay: false`
    # (`bedside gateway start --stock-websockets`, the benchmarks' stock gateway) leaves it all
    # stock.
    sys.path.insert(0, str(_here))
    import bedside_eg_tuning

    bedside_eg_tuning.apply()
