"""The gateway hop alone: two tuned Enterprise Gateways taking turns, CPU per cell of each.

Starts two gateways on loopback with a plain local ipykernel, each loading a different copy of
`bedside_eg_tuning.py` (`--a`, `--b`; default: the committed one against itself), and drives
`/api/kernels/{id}/channels` directly, a block of cells on each in turn. Prints, per gateway,
the gateway process's CPU ms per trivial cell and per 1 MB cell (/proc/<pid>/stat, which a
loaded machine inflates far less than wall-clock) and the wall-clock medians. For comparing a
tuning change A/B; not part of `make bench`.
Run: `.venv/bin/python bench/gateway_hop_ab.py --a OLD.py --b NEW.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bedside.extension._headless import KernelSession
from bedside.gateway.eg import (
    CONFIG_TEMPLATE_DIR,
    EnterpriseGateway,
    GatewaySettings,
    free_port,
    local_kernelspec,
)

TRIVIAL = "1 + 1"
ONE_MB = "print('x' * 1_000_000)"


class Gateway(EnterpriseGateway):
    """A gateway whose tuning module is the file given, not the template's."""

    tuning: Path

    def prepare(self) -> Path:
        config_dir = super().prepare()
        shutil.copyfile(self.tuning, config_dir / "bedside_eg_tuning.py")
        return config_dir


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 10.0  # clock ticks of 10 ms


def start(root: Path, name: str, tuning: Path) -> Gateway:
    home = root / name
    home.mkdir()
    token = home / "token"
    token.write_text(secrets.token_urlsafe(32))
    spec = local_kernelspec([sys.executable, "-m", "ipykernel_launcher", "-f",
                             "{connection_file}"], "plain")  # fmt: skip
    settings = GatewaySettings(token_file=token, kernelspecs={"plain": spec},
                               default_kernel="plain", port=free_port(),
                               authorized_users=["bench"], nodelay=True)  # fmt: skip
    eg = Gateway(home / "home", settings, log_file=home / "eg.log", log_level="WARN")
    eg.tuning = tuning
    eg.start(timeout=120)
    return eg


async def session(eg: Gateway) -> KernelSession:
    client = KernelSession(eg.url, eg.token)
    model = await client.api(
        "POST", "/api/kernels", {"name": "plain", "env": {"KERNEL_USERNAME": "bench"}}
    )
    client.kernel_id = model["id"]
    await client.connect()
    await client.request("kernel_info_request", {}, timeout=180)
    for _ in range(3):
        await client.execute(TRIVIAL)
    await client.execute(ONE_MB)
    return client


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", type=Path, default=CONFIG_TEMPLATE_DIR / "bedside_eg_tuning.py")
    parser.add_argument("--b", type=Path, default=CONFIG_TEMPLATE_DIR / "bedside_eg_tuning.py")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eg-ab-") as tmp:
        gws = {"a": start(Path(tmp), "a", args.a), "b": start(Path(tmp), "b", args.b)}
        try:
            clients = {k: await session(eg) for k, eg in gws.items()}
            cpu: dict[str, dict[str, list[float]]] = {k: {"trivial": [], "one_mb": []}
                                                      for k in gws}  # fmt: skip
            wall: dict[str, dict[str, list[float]]] = {k: {"trivial": [], "one_mb": []}
                                                       for k in gws}  # fmt: skip
            for r in range(args.rounds):
                order = list(gws) if r % 2 == 0 else list(reversed(gws))
                for label, code in (("trivial", TRIVIAL), ("one_mb", ONE_MB)):
                    for k in order:
                        pid = gws[k].process.pid  # type: ignore[union-attr]
                        c0 = cpu_ms(pid)
                        for _ in range(args.block):
                            t = time.perf_counter()
                            await clients[k].execute(code)
                            wall[k][label].append((time.perf_counter() - t) * 1000)
                        cpu[k][label].append((cpu_ms(pid) - c0) / args.block)
            out: dict[str, Any] = {}
            for k in gws:
                out[k] = {
                    f"{label}_{what}": round(fn(vals[k][label]), 3)
                    for label in ("trivial", "one_mb")
                    for what, fn, vals in (("cpu_ms_mean", statistics.fmean, cpu),
                                           ("cpu_ms_median", statistics.median, cpu),
                                           ("wall_ms_median", statistics.median, wall))
                }  # fmt: skip
            print(json.dumps(out, indent=1))
            for client in clients.values():
                await client.close(shutdown=True)
        finally:
            for eg in gws.values():
                eg.stop()


if __name__ == "__main__":
    asyncio.run(main())
