"""`bedside gateway …` as a custodian runs it: refuses to start without a token, starts Enterprise
Gateway with the guarded kernelspec, and stops it (and its kernels) on SIGTERM; `gateway certs`
makes a CA, a server certificate and a client certificate that verify."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bedside.gateway.eg import free_port

pytestmark = pytest.mark.integration

BEDSIDE = [sys.executable, "-m", "bedside"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BEDSIDE, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def start(hospital, tmp_path) -> list[str]:
    """`gateway start` for the fixture hospital, its state in tmp_path/state."""
    policy, key, state = str(hospital.policy), str(hospital.key), str(tmp_path / "state")
    return ["gateway", "start", "--policy", policy, "--custodian-key", key, "--state-dir", state]


def test_start_refuses_without_a_token(hospital, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BEDSIDE_GATEWAY_TOKEN"}
    result = run(*start(hospital, tmp_path), env=env)
    assert result.returncode == 1
    assert "without an auth token" in result.stderr
    assert "--token-file" in result.stderr


def test_start_serves_the_guarded_kernelspec_and_stops_on_sigterm(hospital, tmp_path):
    from bedside.gateway.eg import eg_executable

    eg_executable()  # skip cleanly below if the gateway environment is missing
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32))
    port = free_port()
    proc = subprocess.Popen(
        [
            *BEDSIDE,
            *start(hospital, tmp_path),
            "--token-file",
            str(token),
            "--port",
            str(port),
            "--authorized-users",
            "alice,bob",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        info = json.loads(line)
        assert info["url"] == f"http://127.0.0.1:{port}"
        request = urllib.request.Request(info["url"] + "/api/kernelspecs")
        request.add_header("Authorization", f"token {token.read_text()}")
        with urllib.request.urlopen(request, timeout=30) as response:
            specs = json.loads(response.read())
        assert list(specs["kernelspecs"]) == ["bedside"]
        argv = specs["kernelspecs"]["bedside"]["spec"]["argv"]
        assert argv[1:3] == ["-m", "bedside.gateway.sentry"]
        assert "--no-sandbox" not in argv
        config = json.loads((tmp_path / "state" / "eg" / "config" / "bedside-eg.json").read_text())
        assert config["authorized_users"] == ["alice", "bob"]
        assert config["nodelay"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(info["url"] + "/api", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_certs_make_a_ca_a_server_and_a_client_certificate(tmp_path):
    out = tmp_path / "tls"
    result = run("gateway", "certs", "--out", str(out), "--hostname", "gw.example.org")
    assert result.returncode == 0, result.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    client = x509.load_pem_x509_certificate((out / "client.pem").read_bytes())
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gw.example.org"]
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    for key in ("ca.key", "server.key", "client.key"):
        assert (out / key).stat().st_mode & 0o077 == 0
    again = run("gateway", "certs", "--out", str(out))
    assert again.returncode == 1 and "--force" in again.stderr


def test_kernelspecs_command_writes_the_chain(hospital, tmp_path):
    result = run(
        "gateway",
        "kernelspecs",
        "--policy",
        str(hospital.policy),
        "--custodian-key",
        str(hospital.key),
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "kernels"),
        "--no-sandbox",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads(Path(result.stdout.strip()).read_text())
    assert spec["argv"][-1] == "--no-sandbox"
    assert "NO SANDBOX" in spec["display_name"]
    assert spec["metadata"]["process_proxy"]["class_name"].endswith("LocalProcessProxy")
