"""The TCP_NODELAY fix shipped in the gateway configuration, checked inside Enterprise Gateway's
own environment: loading the config patches EG's kernel websocket handler so that every socket
it opens sets nodelay, and a stock config (nodelay off) leaves the handler alone."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from bedside.errors import GatewayError
from bedside.gateway.eg import CONFIG_NAME, CONFIG_TEMPLATE_DIR, eg_executable

PROBE = textwrap.dedent(
    """
    import json, sys
    from traitlets.config.loader import PyFileConfigLoader
    from enterprise_gateway.services.kernels import handlers

    calls = []

    def recording_open(self, *args, **kwargs):
        calls.append(("open", args))

    class Handler:
        def set_nodelay(self, value):
            calls.append(("set_nodelay", value))

    # Stand in for EG's own open(), then load the config as EG would: the patch wraps it.
    cls = handlers.ZMQChannelsHandler
    cls.open = recording_open
    config = PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    cls.open(Handler(), "kernel-id")
    print(json.dumps({{
        "patched": cls.open is not recording_open,
        "calls": calls,
        "token": config.EnterpriseGatewayApp.auth_token,
        "list_kernels": config.EnterpriseGatewayApp.list_kernels,
    }}))
    """
).format(name=CONFIG_NAME)


@pytest.fixture(scope="module")
def eg_python():
    try:
        return eg_executable().parent / "python"
    except GatewayError as exc:
        pytest.skip(str(exc))


def write_config(tmp_path, *, nodelay: bool):
    for name in (CONFIG_NAME, "bedside_eg_tuning.py"):
        (tmp_path / name).write_text((CONFIG_TEMPLATE_DIR / name).read_text())
    (tmp_path / "token").write_text("a-token-of-enough-length\n")
    (tmp_path / "bedside-eg.json").write_text(
        json.dumps(
            {
                "ip": "127.0.0.1",
                "port": 8888,
                "token_file": str(tmp_path / "token"),
                "authorized_users": ["alice"],
                "default_kernel": "bedside",
                "kernelspecs": ["bedside"],
                "nodelay": nodelay,
            }
        )
    )


def probe(eg_python, config_dir) -> subprocess.CompletedProcess[str]:
    """PROBE in the gateway's own Python, on the config written to config_dir."""
    return subprocess.run(
        [str(eg_python), "-c", PROBE, str(config_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("nodelay", [True, False])
def test_config_patches_websockets_to_nodelay(eg_python, tmp_path, nodelay):
    write_config(tmp_path, nodelay=nodelay)
    result = probe(eg_python, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["token"] == "a-token-of-enough-length"
    assert report["list_kernels"] is False
    assert report["patched"] is nodelay
    expected = [["set_nodelay", True]] if nodelay else []
    assert report["calls"] == [*expected, ["open", ["kernel-id"]]]


def test_empty_token_file_stops_the_gateway(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    (tmp_path / "token").write_text("\n")
    result = probe(eg_python, tmp_path)
    assert result.returncode != 0
    assert "is empty" in result.stderr
