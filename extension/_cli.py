"""`bedside run` (headless runs through the hospital's gateway) and `bedside demo`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="execute a notebook at the hospital, with the session ledger (batch jobs, CI)",
        description=(
            "Execute NOTEBOOK on a kernel at the hospital through its Enterprise Gateway, exactly "
            "as JupyterLab with the bedside extension would: every request is signed, every "
            "message is checked against the hospital's receipt, and the session is sealed at the "
            "end. Writes OUT/<name>.bedside.ipynb, OUT/<name>.ledger and OUT/<name>.openings. "
            "Environment: BEDSIDE_GATEWAY_URL, BEDSIDE_GATEWAY_TOKEN, BEDSIDE_CLIENT_CERT, "
            "BEDSIDE_CLIENT_KEY, BEDSIDE_CA_CERTS, BEDSIDE_CUSTODIAN_KEY (each overridden by "
            "its flag)."
        ),
    )
    run.add_argument("notebook", type=Path, help="the notebook to execute")
    run.add_argument(
        "--gateway",
        default=os.environ.get("BEDSIDE_GATEWAY_URL", ""),
        help="the hospital's gateway URL (default: $BEDSIDE_GATEWAY_URL)",
    )
    run.add_argument(
        "--token",
        default="",
        help="the gateway token the hospital issued (default: --token-file, else "
        "$BEDSIDE_GATEWAY_TOKEN)",
    )
    run.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the gateway token (not visible in `ps`, unlike --token)",
    )
    tls = run.add_argument_group(
        "TLS to the gateway",
        "for a gateway started with --certfile/--keyfile (and --client-ca for mutual TLS); "
        "`bedside gateway certs` makes these files",
    )
    tls.add_argument(
        "--client-cert",
        default=os.environ.get("BEDSIDE_CLIENT_CERT", ""),
        metavar="PEM",
        help="your TLS client certificate (default: $BEDSIDE_CLIENT_CERT)",
    )
    tls.add_argument(
        "--client-key",
        default=os.environ.get("BEDSIDE_CLIENT_KEY", ""),
        metavar="PEM",
        help="the client certificate's private key (default: $BEDSIDE_CLIENT_KEY)",
    )
    tls.add_argument(
        "--ca-certs",
        default=os.environ.get("BEDSIDE_CA_CERTS", ""),
        metavar="PEM",
        help="the CA that signed the gateway's certificate (default: $BEDSIDE_CA_CERTS)",
    )
    run.add_argument(
        "--wait-releases",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before sealing, wait up to SECONDS for custodians to decide the release "
        "requests still pending (decisions can only be recorded while the session is live; "
        "default 0: seal at once)",
    )
    run.add_argument(
        "--intent",
        default="",
        help="session intent file (JSON/YAML), when the notebook metadata has no bedside.intent",
    )
    run.add_argument("--out", type=Path, default=Path("bedside-run"), help="output directory")
    run.add_argument("--kernel", default="", help="kernel name (default: the notebook's)")
    run.add_argument(
        "--custodian-key",
        default=os.environ.get("BEDSIDE_CUSTODIAN_KEY", ""),
        help="the custodian's verifier key to pin (default: learned from the hospital)",
    )
    run.add_argument(
        "--allow-errors", action="store_true", help="keep going after a cell raises an error"
    )
    run.set_defaults(handler=_run)

    demo = subparsers.add_parser(
        "demo",
        help="start a synthetic hospital and JupyterLab with the walkthrough notebooks",
        description=(
            "Writes a synthetic hospital, starts its gateway (with the sentry and sandboxed "
            "kernels), a local chain for anchoring, JupyterLab with the bedside extension pointed "
            "at the gateway and a reviewer's JupyterLab with local kernels, and prints the URLs "
            "and tokens to open. Ctrl-C stops everything. It never opens a browser."
        ),
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path(".bedside-demo"),
        help="working directory: hospital, keys, notebooks, ledgers, logs (reused if it exists)",
    )
    demo.add_argument("--port", type=int, default=8888, help="JupyterLab port (0: any free port)")
    demo.add_argument("--patients", type=int, default=2000, help="synthetic patients")
    demo.set_defaults(handler=_demo)


def _run(args: argparse.Namespace) -> int:
    from bedside.errors import Error

    from ._headless import run_notebook

    if not args.gateway:
        raise Error("no gateway URL: pass --gateway URL or set BEDSIDE_GATEWAY_URL")
    if not args.notebook.is_file():
        raise Error(f"{args.notebook}: no such notebook")
    token = args.token or os.environ.get("BEDSIDE_GATEWAY_TOKEN", "")
    if args.token_file is not None:
        if args.token:
            raise Error("give the gateway token once: --token or --token-file, not both")
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise Error(
                f"--token-file {args.token_file}: cannot read it ({exc.strerror}); the "
                "hospital's custodian gives you the token the gateway was started with"
            ) from None
    if bool(args.client_cert) != bool(args.client_key):
        raise Error(
            "a TLS client certificate needs its key: pass both --client-cert and --client-key "
            "(or set both BEDSIDE_CLIENT_CERT and BEDSIDE_CLIENT_KEY)"
        )
    for flag, value in (
        ("--client-cert", args.client_cert),
        ("--client-key", args.client_key),
        ("--ca-certs", args.ca_certs),
    ):
        if value and not Path(value).is_file():
            raise Error(
                f"{flag} {value}: no such file; the custodian makes these with "
                "`bedside gateway certs`"
            )
    if args.wait_releases < 0:
        raise Error("--wait-releases SECONDS must be 0 or more")
    result = asyncio.run(
        run_notebook(
            args.notebook,
            gateway_url=args.gateway,
            gateway_token=token,
            client_cert=str(Path(args.client_cert).resolve()) if args.client_cert else "",
            client_key=str(Path(args.client_key).resolve()) if args.client_key else "",
            ca_certs=str(Path(args.ca_certs).resolve()) if args.ca_certs else "",
            wait_releases=args.wait_releases,
            intent_file=args.intent,
            out_dir=args.out,
            kernel_name=args.kernel,
            custodian_key=args.custodian_key,
            allow_errors=args.allow_errors,
        )
    )
    print(f"notebook: {result.notebook}")
    print(f"ledger:   {result.ledger or '(none: the hospital wrote no entries)'}")
    print(f"openings: {result.openings or '(none)'}")
    status = result.status
    print(
        f"session:  {status.get('session') or status.get('kernel_id')} "
        f"state={status.get('state')} entries={status.get('entries')} root={status.get('root')}"
    )
    if status.get("reason"):
        print(f"reason:   {status['reason']}")
    for r in result.releases:
        fetched = r.get("fetched") or {}
        where = f" -> {fetched.get('path')}" if fetched.get("path") else ""
        print(f"release:  {r.get('id')} {r.get('name')} {r.get('state')}{where}")
    if result.unverified:
        print(f"warning:  {result.unverified} message(s) came back without a valid receipt")
    for line in result.errors:
        print(f"error:    {line}")
    (args.out / "status.json").write_text(json.dumps(status, indent=1))
    ok = not result.errors and status.get("state") == "sealed" and not result.unverified
    return 0 if ok else 1


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args.dir, port=args.port, patients=args.patients)
