"""Kubernetes deployment files for a hospital gateway: the kernelspec and kernel-pod template for
Enterprise Gateway's Kubernetes process proxy, the NetworkPolicy that denies kernel egress, and
the Helm values of Enterprise Gateway's chart.

The templates in `k8s/` hold two kinds of fields: `[[ ... ]]`, filled here from the custodian's
policy and settings, and `{{ ... }}`, left for Enterprise Gateway to fill per kernel. No cluster
runs in this project's tests: the output is rendered and validated against the Kubernetes
schemas, not deployed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["K8sSettings", "render_deployment", "render_stage1", "TEMPLATES"]

TEMPLATES = Path(__file__).resolve().parent / "k8s"


@dataclass(frozen=True)
class K8sSettings:
    """What a custodian decides for a cluster deployment (beyond the policy)."""

    image: str
    kernelspecs_image: str = "registry.hospital.example/bedside-kernelspecs:0.1.0"
    kernelspec_name: str = "bedside_kubernetes"
    gateway_namespace: str = "enterprise-gateway"
    kernel_namespace: str = "bedside-kernels"
    hostname: str = "gateway.hospital.example"
    tls_secret: str = "bedside-gateway-tls"  # noqa: S105 - a Secret object name
    authorized_users: tuple[str, ...] = ()
    policy_configmap: str = "bedside-policy"
    custodian_secret: str = "bedside-custodian-key"  # noqa: S105 - a Secret object name
    data_claim: str = "bedside-data"
    data_mount: str = "/data"
    ledger_claim: str = "bedside-ledgers"
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    scratch_size: str = "4Gi"
    sentry_memory: str = "1Gi"
    sentry_uid: int = 10000
    kernel_uid: int = 10001
    kernel_module: str = "bedside.kernel"


def _stage1_env() -> jinja2.Environment:
    # `[[ ]]` for bedside; `{{ }}` and `{% %}` pass through untouched for Enterprise Gateway.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML/JSON output; every value is a plain scalar
    )


def _outbox_mib(policy: Any) -> int:
    """Room for one release request of the policy's largest kind, and its metadata."""
    release = getattr(policy, "release", None)
    kinds = getattr(release, "kinds", None) or {}
    largest = max((int(k.max_bytes) for k in kinds.values()), default=200 * 10**6)
    return -(-largest // 2**20) + 16


def stage1_values(policy: Any, settings: K8sSettings) -> dict[str, Any]:
    limits = getattr(policy, "limits", None)
    memory_mb = int(getattr(limits, "memory_mb", 4096) or 4096)
    values = asdict(settings)
    values.update(
        policy_id=str(getattr(policy, "id", "unknown")),
        policy_digest=str(getattr(policy, "digest", "")),
        memory=f"{memory_mb}Mi",
        outbox_size=f"{_outbox_mib(policy)}Mi",
        authorized_users=",".join(settings.authorized_users),
    )
    for key, value in values.items():
        # Every [[ ]] field sits inside a double-quoted YAML/JSON string or is an int.
        if isinstance(value, str) and any(c in value for c in '"\\\n'):
            raise ValueError(f"k8s setting {key}={value!r} contains a quote, backslash or newline")
    return values


def render_stage1(name: str, policy: Any, settings: K8sSettings) -> str:
    """One template of `k8s/` with the custodian's fields filled."""
    return _stage1_env().get_template(name).render(**stage1_values(policy, settings))


def render_deployment(policy: Any, settings: K8sSettings, out: Path) -> dict[str, Path]:
    """Write the kernelspec (kernel.json + scripts/kernel-pod.yaml.j2), the NetworkPolicy and the
    Helm values under `out`; return what was written, by role."""
    spec_dir = out / "kernelspecs" / settings.kernelspec_name
    (spec_dir / "scripts").mkdir(parents=True, exist_ok=True)
    written = {
        "kernelspec": spec_dir / "kernel.json",
        "pod_template": spec_dir / "scripts" / "kernel-pod.yaml.j2",
        "network_policy": out / "networkpolicy.yaml",
        "helm_values": out / "helm-values.yaml",
    }
    sources = {
        "kernelspec": "kernel.json",
        "pod_template": "kernel-pod.yaml.j2",
        "network_policy": "networkpolicy.yaml",
        "helm_values": "helm-values.yaml",
    }
    for role, path in written.items():
        path.write_text(render_stage1(sources[role], policy, settings))
    json.loads(written["kernelspec"].read_text())  # a typo in the template fails here, not in EG
    return written


def render_pod(template: Path, keywords: dict[str, Any]) -> str:
    """Render a stage-1 pod template exactly as Enterprise Gateway's launch_kubernetes.py does
    (same loader, same autoescape rule, keywords from lower-cased KERNEL_* values)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=jinja2.select_autoescape(
            disabled_extensions=("j2", "yaml"), default_for_string=True, default=True
        ),
    )
    return env.get_template(template.name).render(**keywords)
