"""`bedside run` options: token and TLS files from flags or the environment, checked before
anything starts, and --wait-releases (custodians decide before the seal, approved releases are
fetched). The REST client is a stand-in here; tests/integration runs the real path."""

from __future__ import annotations

import asyncio

import nbformat
import pytest

from bedside._cli import main as bedside
from bedside.extension import _headless


@pytest.fixture
def notebook(tmp_path):
    path = tmp_path / "study.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "bedside", "display_name": "bedside"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def captured(monkeypatch):
    """run_notebook's arguments, and a result as if the session sealed cleanly."""
    seen: dict = {}

    async def fake(notebook, **kwargs):
        seen.update(kwargs, notebook=notebook)
        kwargs["out_dir"].mkdir(parents=True, exist_ok=True)
        return _headless.RunResult(notebook, None, None, {"state": "sealed"}, [], 0)

    monkeypatch.setattr(_headless, "run_notebook", fake)
    for name in ("BEDSIDE_CLIENT_CERT", "BEDSIDE_CLIENT_KEY", "BEDSIDE_CA_CERTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BEDSIDE_GATEWAY_TOKEN", raising=False)
    return seen


def _pems(tmp_path):
    names = ("client.pem", "client.key", "ca.pem")
    for name in names:
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    return [tmp_path / n for n in names]


def test_help_names_the_tls_flags_and_their_environment(capsys):
    with pytest.raises(SystemExit):
        bedside(["run", "--help"])
    out = capsys.readouterr().out
    for text in (
        "--client-cert",
        "--client-key",
        "--ca-certs",
        "--token-file",
        "--wait-releases",
        "BEDSIDE_CLIENT_CERT",
        "BEDSIDE_CLIENT_KEY",
        "BEDSIDE_CA_CERTS",
    ):
        assert text in out


def test_tls_flags_and_token_file_reach_the_run(notebook, tmp_path, captured):
    cert, key, ca = _pems(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    args = ["run", str(notebook), "--gateway", "https://h:8888", "--out", str(tmp_path / "o")]
    args += ["--client-cert", str(cert), "--client-key", str(key), "--ca-certs", str(ca)]
    args += ["--token-file", str(token), "--wait-releases", "30"]
    assert bedside(args) == 0
    assert captured["client_cert"] == str(cert.resolve())
    assert captured["client_key"] == str(key.resolve())
    assert captured["ca_certs"] == str(ca.resolve())
    assert captured["gateway_token"] == "s3cret-token-0123456789"
    assert captured["wait_releases"] == 30


def test_tls_files_default_to_the_environment(notebook, tmp_path, captured, monkeypatch):
    cert, key, ca = _pems(tmp_path)
    monkeypatch.setenv("BEDSIDE_CLIENT_CERT", str(cert))
    monkeypatch.setenv("BEDSIDE_CLIENT_KEY", str(key))
    monkeypatch.setenv("BEDSIDE_CA_CERTS", str(ca))
    monkeypatch.setenv("BEDSIDE_GATEWAY_TOKEN", "from-the-environment")
    args = ["run", str(notebook), "--gateway", "https://h:8888", "--out", str(tmp_path / "o")]
    assert bedside(args) == 0
    assert captured["client_cert"] == str(cert.resolve())
    assert captured["ca_certs"] == str(ca.resolve())
    assert captured["gateway_token"] == "from-the-environment"
    assert captured["wait_releases"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--client-cert", "CERT"], "needs its key"),
        (["--client-cert", "CERT", "--client-key", "missing.key"], "bedside gateway certs"),
        (["--ca-certs", "missing.pem"], "no such file"),
        (["--token-file", "missing-token"], "cannot read it"),
        (["--token", "x", "--token-file", "TOKEN"], "not both"),
        (["--wait-releases", "-1"], "0 or more"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(
    notebook, tmp_path, captured, capsys, extra, message
):
    cert, _, _ = _pems(tmp_path)
    (tmp_path / "TOKEN").write_text("t" * 20)
    extra = [
        str(cert) if a == "CERT" else str(tmp_path / "TOKEN") if a == "TOKEN" else a for a in extra
    ]
    args = ["run", str(notebook), "--gateway", "https://h:8888", "--out", str(tmp_path / "o")]
    assert bedside(args + extra) == 1
    assert message in capsys.readouterr().err
    assert not captured  # nothing started


class FakeHospital:
    """The researcher server's release endpoints: states advance one step per listing."""

    def __init__(self, script: list[list[dict]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, method: str, path: str) -> dict:
        self.calls.append((method, path))
        if method == "POST":
            return {"path": "releases/counts/", "verified": True}
        rows = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return {"live": True, "releases": [dict(r) for r in rows]}


def test_wait_releases_waits_for_the_decision_then_fetches_the_approved():
    pending = {"id": "r-20260101000000-aaaaaa", "name": "counts", "status": "pending"}
    pending["state"] = "pending"
    approved = {**pending, "status": "delivered", "state": "approved"}
    denied = {"id": "r-20260101000000-bbbbbb", "name": "raw", "status": "denied", "state": "denied"}
    hospital = FakeHospital([[pending, denied], [pending, denied], [approved, denied]])
    rows, errors = asyncio.run(_headless.settle_releases(hospital, "k1", 3600, poll=0))
    assert errors == []
    assert [m for m, _ in hospital.calls] == ["GET", "GET", "GET", "POST"]
    assert hospital.calls[-1][1] == "/bedside/sessions/k1/releases/r-20260101000000-aaaaaa/fetch"
    assert rows[0]["fetched"]["path"] == "releases/counts/" and "fetched" not in rows[1]


def test_wait_releases_reports_what_is_still_undecided_at_the_deadline():
    pending = {"id": "r-20260101000000-aaaaaa", "name": "counts", "status": "pending"}
    hospital = FakeHospital([[{**pending, "state": "pending"}]])
    rows, errors = asyncio.run(_headless.settle_releases(hospital, "k1", 0, poll=0))
    assert len(errors) == 1 and "still pending" in errors[0] and "--wait-releases" in errors[0]
    assert all(m == "GET" for m, _ in hospital.calls)


def test_run_notebook_hands_the_tls_files_to_the_researcher_server(tmp_path, monkeypatch):
    seen = {}

    def enter(self):
        seen.update(self.config()["Bedside"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(_headless.ResearcherServer, "__enter__", enter)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "bedside"}
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(RuntimeError, match="stop here"):
        asyncio.run(
            _headless.run_notebook(
                path,
                gateway_url="https://h:8888",
                out_dir=tmp_path / "o",
                client_cert="/c.pem",
                client_key="/c.key",
                ca_certs="/ca.pem",
            )
        )
    assert seen["client_cert"] == "/c.pem" and seen["client_key"] == "/c.key"
    assert seen["ca_certs"] == "/ca.pem"
