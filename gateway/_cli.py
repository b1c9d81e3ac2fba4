"""`bedside gateway …`: the custodian's commands to run the hospital's Enterprise Gateway.

`gateway start` writes the guarded kernelspec and the gateway configuration into a private
directory and runs Enterprise Gateway in the foreground until Ctrl-C or SIGTERM;
`gateway certs` makes TLS material; `gateway kernelspecs` writes the kernelspec alone, for a
gateway deployed some other way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from bedside.errors import GatewayError

TOKEN_ENV = "BEDSIDE_GATEWAY_TOKEN"  # noqa: S105 - a variable name, not a secret


def register(subparsers: Any) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="run the hospital's Enterprise Gateway (custodians)",
        description="Run Jupyter Enterprise Gateway in front of the guarded bedside kernel.",
    )
    commands = gateway.add_subparsers(dest="gateway_command", metavar="COMMAND")
    gateway.set_defaults(handler=lambda _args: gateway.print_help() or 2)

    # `bedside sentry …` is what the kernelspecs launch. Its own parser lives with the sentry;
    # importing it here would pull zmq and the guard into every `bedside --help`, so the
    # arguments are handed over unparsed.
    sentry = subparsers.add_parser(
        "sentry",
        help="run one kernel behind the sentry (internal: launched by the bedside kernelspec)",
        add_help=False,
        prefix_chars="\x00",  # no options of its own: every argument goes to the sentry's parser
    )
    sentry.add_argument("sentry_args", nargs=argparse.REMAINDER)
    sentry.set_defaults(handler=_run_sentry)

    start = commands.add_parser(
        "start",
        help="start Enterprise Gateway with the guarded kernel (foreground; Ctrl-C stops it)",
        description=(
            "Start Enterprise Gateway serving one kernelspec, `bedside`, which runs the sentry, "
            "the bubblewrap sandbox and the guarded kernel. A token is required: give it with "
            f"--token-file (recommended), --token, or the {TOKEN_ENV} environment variable."
        ),
    )
    _chain_arguments(start)
    start.add_argument("--home", type=Path, help="gateway config dir (default: STATE_DIR/eg)")
    start.add_argument("--ip", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    start.add_argument("--port", type=int, default=8888, help="port to listen on (8888)")
    start.add_argument("--token", help="auth token (visible in `ps`; prefer --token-file)")
    start.add_argument("--token-file", type=Path, help="file holding the auth token")
    start.add_argument(
        "--authorized-users",
        default="",
        help="comma-separated KERNEL_USERNAME values allowed to start kernels (default: any "
        "but root)",
    )
    start.add_argument("--certfile", type=Path, help="TLS server certificate (PEM)")
    start.add_argument("--keyfile", type=Path, help="TLS server key (PEM)")
    start.add_argument(
        "--client-ca", type=Path, help="CA whose client certificates are required (mutual TLS)"
    )
    start.add_argument(
        "--stock-websockets",
        action="store_true",
        help=(
            "leave EG's kernel websocket path stock: Nagle's algorithm on and none of bedside's "
            "websocket tuning (benchmarks only)"
        ),
    )
    start.add_argument("--log-level", default="INFO", help="Enterprise Gateway log level")
    start.set_defaults(handler=_start)

    certs = commands.add_parser(
        "certs",
        help="make a CA, a server certificate and a client certificate for TLS",
        description="Write ca.pem, server.pem/.key and client.pem/.key (keys 0600) into --out.",
    )
    certs.add_argument("--out", type=Path, required=True, help="directory to write into")
    certs.add_argument(
        "--hostname",
        action="append",
        help="server name or IP (repeatable; default: localhost and 127.0.0.1)",
    )
    certs.add_argument("--client-name", default="researcher", help="client certificate CN")
    certs.add_argument("--days", type=int, default=365, help="validity in days (365)")
    certs.add_argument("--force", action="store_true", help="replace existing files")
    certs.set_defaults(handler=_certs)

    specs = commands.add_parser(
        "kernelspecs",
        help="write the guarded kernelspec for an Enterprise Gateway you run yourself",
        description="Write OUT/bedside/kernel.json (local process proxy) and print its path.",
    )
    _chain_arguments(specs)
    specs.add_argument("--out", type=Path, required=True, help="kernels directory to write into")
    specs.set_defaults(handler=_kernelspecs)

    k8s = commands.add_parser(
        "k8s",
        help="write the Kubernetes kernelspec, pod template, NetworkPolicy and Helm values",
        description=(
            "Render the files for Enterprise Gateway's Kubernetes process proxy from a policy: "
            "OUT/kernelspecs/NAME/{kernel.json,scripts/kernel-pod.yaml.j2}, "
            "OUT/networkpolicy.yaml and OUT/helm-values.yaml. Nothing is deployed."
        ),
    )
    k8s.add_argument("--policy", type=Path, required=True, help="the kernel policy (YAML)")
    k8s.add_argument("--image", required=True, help="the bedside image (sentry and kernel)")
    k8s.add_argument("--out", type=Path, required=True, help="directory to write into")
    k8s.add_argument("--kernelspecs-image", help="image that carries the kernelspecs for EG")
    k8s.add_argument("--hostname", help="the gateway's public host name (ingress)")
    k8s.add_argument("--kernel-namespace", help="namespace of the kernel pods")
    k8s.add_argument("--gateway-namespace", help="namespace of Enterprise Gateway")
    k8s.add_argument("--authorized-users", default="", help="comma-separated KERNEL_USERNAMEs")
    k8s.add_argument("--cpu-limit", help="CPU limit of the kernel container (e.g. 2)")
    k8s.add_argument("--data-claim", help="PersistentVolumeClaim holding the datasets")
    k8s.set_defaults(handler=_k8s)


def _chain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=Path, required=True, help="the kernel policy (YAML)")
    parser.add_argument(
        "--custodian-key", type=Path, required=True, help="custodian signing key (sentry only)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("bedside-state"),
        help="where the sentry keeps ledgers and kernel scratch (./bedside-state)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run kernels WITHOUT bubblewrap (development only; every notice says so)",
    )


def _check_chain(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    policy = args.policy.resolve()
    if not policy.is_file():
        raise GatewayError(f"policy file {args.policy} does not exist")
    try:
        from bedside.policy import load_policy
    except ImportError:
        load_policy = None
    if load_policy is not None:
        load_policy(policy)  # raises PolicyError naming file, line and fix
    key = args.custodian_key.resolve()
    if not key.is_file():
        raise GatewayError(
            f"custodian key {args.custodian_key} does not exist; "
            "make one with `bedside keys new NAME`"
        )
    if not args.no_sandbox and shutil.which("bwrap") is None:
        raise GatewayError(
            "bubblewrap (bwrap) is not installed, so kernels cannot be sandboxed; run "
            "`make system` (apt-get install bubblewrap), or pass --no-sandbox on a development "
            "machine"
        )
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    return policy, key, state


def _kernelspecs(args: argparse.Namespace) -> int:
    from bedside.gateway.eg import sentry_kernelspec, write_kernelspecs

    policy, key, state = _check_chain(args)
    spec = sentry_kernelspec(
        policy=policy, custodian_key=key, state_dir=state, sandbox=not args.no_sandbox
    )
    write_kernelspecs(args.out, {"bedside": spec})
    print(args.out / "bedside" / "kernel.json")
    return 0


def _token_file(args: argparse.Namespace, home: Path) -> Path:
    if args.token_file is not None:
        path = Path(args.token_file).resolve()
        if not path.is_file():
            raise GatewayError(
                f"--token-file {args.token_file}: no such file. Make one (readable by you "
                'only) with `(umask 077; python -c "import secrets; '
                f'print(secrets.token_urlsafe(32))" > {args.token_file})`, then give the same '
                "token to researchers (their $BEDSIDE_GATEWAY_TOKEN or `bedside run --token-file`)"
            )
        return path
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise GatewayError(
            "refusing to start Enterprise Gateway without an auth token: pass --token-file FILE "
            f"(or --token, or set {TOKEN_ENV}); make one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))" > token`'
        )
    path = home / "token"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return path


def _start(args: argparse.Namespace) -> int:
    from bedside.gateway.eg import EnterpriseGateway, GatewaySettings, sentry_kernelspec

    policy, key, state = _check_chain(args)
    home = (args.home or state / "eg").resolve()
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    if bool(args.certfile) != bool(args.keyfile):
        raise GatewayError("TLS needs both --certfile and --keyfile")
    if args.client_ca and not args.certfile:
        raise GatewayError("--client-ca (mutual TLS) needs --certfile and --keyfile as well")
    users = [u.strip() for u in args.authorized_users.split(",") if u.strip()]
    if "root" in users:
        raise GatewayError("`root` cannot be an authorized user: Enterprise Gateway refuses it")
    settings = GatewaySettings(
        token_file=_token_file(args, home),
        kernelspecs={
            "bedside": sentry_kernelspec(
                policy=policy, custodian_key=key, state_dir=state, sandbox=not args.no_sandbox
            )
        },
        ip=args.ip,
        port=args.port,
        authorized_users=users,
        certfile=args.certfile,
        keyfile=args.keyfile,
        client_ca=args.client_ca,
        nodelay=not args.stock_websockets,
    )
    gateway = EnterpriseGateway(
        home, settings, log_file=home / "gateway.log", log_level=args.log_level
    )

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        gateway.start()
        print(
            json.dumps(
                {
                    "url": gateway.url,
                    "kernelspec": "bedside",
                    "sandbox": not args.no_sandbox,
                    "authorized_users": users or "any but root",
                    "mutual_tls": bool(args.client_ca),
                    "log": str(gateway.log_file),
                }
            ),
            flush=True,
        )
        print("Enterprise Gateway is running; Ctrl-C stops it and its kernels.", file=sys.stderr)
        assert gateway.process is not None
        status = gateway.process.wait()
        raise GatewayError(f"Enterprise Gateway exited with status {status}:\n{gateway.log_tail()}")
    except KeyboardInterrupt:
        return 0
    finally:
        gateway.stop()
        signal.signal(signal.SIGTERM, previous)


def _k8s(args: argparse.Namespace) -> int:
    from bedside.gateway.kube import K8sSettings, render_deployment

    policy_path = args.policy.resolve()
    if not policy_path.is_file():
        raise GatewayError(f"policy file {args.policy} does not exist")
    from bedside.policy import load_policy

    policy = load_policy(policy_path)
    overrides = {
        "kernelspecs_image": args.kernelspecs_image,
        "hostname": args.hostname,
        "kernel_namespace": args.kernel_namespace,
        "gateway_namespace": args.gateway_namespace,
        "cpu_limit": args.cpu_limit,
        "data_claim": args.data_claim,
    }
    settings = K8sSettings(
        image=args.image,
        authorized_users=tuple(u.strip() for u in args.authorized_users.split(",") if u.strip()),
        **{k: v for k, v in overrides.items() if v},
    )
    try:
        written = render_deployment(policy, settings, args.out)
    except ValueError as exc:
        raise GatewayError(str(exc)) from exc
    for role, path in written.items():
        print(f"{role}: {path}")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from bedside.gateway.certs import make_certificates

    made = make_certificates(
        args.out,
        hostnames=args.hostname or ["localhost", "127.0.0.1"],
        client_name=args.client_name,
        days=args.days,
        overwrite=args.force,
    )
    for name, path in vars(made).items():
        print(f"{name}: {path}")
    return 0


def _run_sentry(args: argparse.Namespace) -> int:
    from bedside.gateway.sentry import main as sentry_main

    return sentry_main(list(args.sentry_args))
