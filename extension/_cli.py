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
            "end. Writes OUT/<name>.bedside.ipynb, OUT/<name>.ledger and OUT/<name>.openings."
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
        default=os.environ.get("BEDSIDE_GATEWAY_TOKEN", ""),
        help="the gateway token the hospital issued (default: $BEDSIDE_GATEWAY_TOKEN)",
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
    result = asyncio.run(
        run_notebook(
            args.notebook,
            gateway_url=args.gateway,
            gateway_token=args.token,
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
