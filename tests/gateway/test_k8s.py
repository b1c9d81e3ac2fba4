"""The Kubernetes files, rendered for a sample policy the way `bedside gateway k8s` and then
Enterprise Gateway's launch_kubernetes.py render them, and validated against the Kubernetes
schemas (kubernetes-validate, strict). No cluster runs here: these tests check the manifests,
not a deployment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bedside.gateway.kube import K8sSettings, render_deployment, render_pod

K8S_VERSION = "1.30"

POLICY = """\
version: bedside/v1
id: st-elsewhere
datasets:
  patients:
    path: data/patients.csv
    record_id: mrn
    identifiers: [mrn, name]
limits:
  memory_mb: 3072
  cpu_seconds: 7200
  processes: 64
"""


@pytest.fixture
def policy(tmp_path: Path):
    from bedside.policy import load_policy

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "patients.csv").write_text("mrn,name\nMRN1,Ann Example\n")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return load_policy(path)


@pytest.fixture
def deployment(policy, tmp_path: Path) -> dict[str, Path]:
    settings = K8sSettings(
        image="registry.hospital.example/bedside:0.1.0", authorized_users=("alice", "bob")
    )
    return render_deployment(policy, settings, tmp_path / "out")


def launch_keywords(**extra: object) -> dict[str, object]:
    """What launch_kubernetes.py passes: lower-cased KERNEL_* values (YAML-parsed)."""
    keywords: dict[str, object] = {
        "kernel_id": "6c7a0b52-1f2e-4d7b-9a55-0d4bb9a4f7e1",
        "kernel_pod_name": "alice-6c7a0b52-1f2e-4d7b-9a55-0d4bb9a4f7e1",
        "kernel_namespace": "bedside-kernels",
        "kernel_username": "alice",
        "kernel_name": "bedside_kubernetes",
    }
    keywords.update(extra)
    return keywords


def pod(deployment: dict[str, Path], **extra: object) -> dict:
    rendered = render_pod(deployment["pod_template"], launch_keywords(**extra))
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(documents) == 1
    return documents[0]


def test_pod_is_a_valid_kubernetes_pod(deployment):
    manifest = pod(deployment)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_sentry_is_the_entry_point_and_alone_holds_the_key(deployment):
    spec = pod(deployment)["spec"]
    sentry, kernel = spec["containers"]
    # launch_kubernetes.py gives containers[0] EG's response address and public key.
    assert sentry["name"] == "sentry"
    assert sentry["command"][-1] == "bedside.gateway.pod"
    sentry_mounts = {m["name"] for m in sentry["volumeMounts"]}
    kernel_mounts = {m["name"]: m for m in kernel["volumeMounts"]}
    assert {"custodian-key", "ledgers"} <= sentry_mounts
    assert "custodian-key" not in kernel_mounts and "ledgers" not in kernel_mounts
    # The only writable volumes the two containers share: the ipc sockets and the release
    # outbox (which the sentry reads as untrusted: plain files only, no links), both emptyDirs.
    shared_writable = {
        m["name"]
        for m in kernel["volumeMounts"]
        if not m.get("readOnly") and m["name"] in sentry_mounts
    }
    assert shared_writable == {"ipc", "outbox"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["ipc"] and "emptyDir" in volumes["outbox"]
    outbox = {m["mountPath"] for m in kernel["volumeMounts"] if m["name"] == "outbox"}
    assert {"name": "BEDSIDE_OUTBOX", "value": outbox.pop()} in kernel["env"]
    assert kernel_mounts["data"]["readOnly"] is True
    assert volumes["data"]["persistentVolumeClaim"]["readOnly"] is True


def test_kernel_container_is_locked_down_with_policy_limits(deployment):
    spec = pod(deployment)["spec"]
    kernel = spec["containers"][1]
    assert spec["automountServiceAccountToken"] is False
    assert spec["hostNetwork"] is False and spec["shareProcessNamespace"] is False
    context = kernel["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["runAsUser"] != 0 and spec["securityContext"]["runAsNonRoot"] is True
    assert kernel["resources"]["limits"]["memory"] == "3072Mi"  # policy.limits.memory_mb
    assert kernel["resources"]["limits"]["cpu"] == "2"
    assert not any(e["name"].startswith(("EG_", "KERNEL_")) for e in kernel.get("env", []))


def test_client_kernel_values_cannot_inject_yaml(deployment):
    hostile = 'x"\n  hostNetwork: true\nspec:\n  containers: []'
    manifest = pod(
        deployment,
        kernel_username=hostile,
        kernel_image="evil/image:latest",
        kernel_volumes=["{name: root, hostPath: {path: /}}"],
    )
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert manifest["metadata"]["annotations"]["bedside/kernel-username"] == hostile
    assert manifest["spec"]["hostNetwork"] is False
    assert all(
        c["image"].startswith("registry.hospital.example/") for c in manifest["spec"]["containers"]
    )
    assert all("hostPath" not in v for v in manifest["spec"]["volumes"])


def test_network_policy_denies_kernel_egress(deployment):
    manifest = yaml.safe_load(deployment["network_policy"].read_text())
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    spec = manifest["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec["podSelector"]["matchLabels"] == {
        "app": "enterprise-gateway",
        "component": "kernel",
    }
    # The one egress rule: Enterprise Gateway's response port, nothing else (no DNS, no CIDR).
    (rule,) = spec["egress"]
    assert [p["port"] for p in rule["ports"]] == [8877]
    assert all("ipBlock" not in peer for peer in rule["to"])
    pod_labels = pod(deployment)["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_kernelspec_uses_the_kubernetes_process_proxy(deployment):
    spec = json.loads(deployment["kernelspec"].read_text())
    proxy = spec["metadata"]["process_proxy"]
    assert proxy["class_name"].endswith("k8s.KubernetesProcessProxy")
    assert proxy["config"]["image_name"] == "registry.hospital.example/bedside:0.1.0"
    for placeholder in ("{kernel_id}", "{response_address}", "{public_key}", "{port_range}"):
        assert placeholder in spec["argv"]
    assert deployment["pod_template"].parent.name == "scripts"


def test_helm_values_name_only_the_bedside_kernel(deployment):
    values = yaml.safe_load(deployment["helm_values"].read_text())
    assert values["image"] == "elyra/enterprise-gateway:3.3.0"
    assert values["kernel"]["allowedKernels"] == ["bedside_kubernetes"]
    assert values["kernel"]["shareGatewayNamespace"] is False
    assert values["deployment"]["extraEnv"]["EG_AUTHORIZED_USERS"] == "alice,bob"
    assert values["deployment"]["extraEnv"]["EG_LIST_KERNELS"] == "False"
    assert values["authToken"] == ""  # set at install time, never written to a file
    assert values["kip"]["enabled"] is False
    assert values["ingress"]["tls"]


def test_settings_with_quotes_are_refused(policy, tmp_path):
    with pytest.raises(ValueError, match="quote"):
        render_deployment(policy, K8sSettings(image='bad"image'), tmp_path / "out")


def test_cli_writes_the_files(tmp_path, policy):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bedside",
            "gateway",
            "k8s",
            "--policy",
            str(policy.path),
            "--image",
            "registry.hospital.example/bedside:0.1.0",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / "networkpolicy.yaml").exists()
    assert (tmp_path / "cli" / "kernelspecs" / "bedside_kubernetes" / "kernel.json").exists()


def test_sentry_container_passes_egs_values_to_the_pod_entry_point(deployment):
    """launch_kubernetes.py adds KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY and PORT_RANGE to
    containers[0]'s env; the sentry's args name them as $(NAME), which the kubelet expands."""
    from bedside.gateway.pod import build_parser

    sentry, kernel = pod(deployment)["spec"]["containers"]
    args = sentry["args"]
    for flag, var in (
        ("--kernel-id", "KERNEL_ID"),
        ("--response-address", "RESPONSE_ADDRESS"),
        ("--public-key", "PUBLIC_KEY"),
        ("--port-range", "PORT_RANGE"),
    ):
        assert args[args.index(flag) + 1] == f"$({var})"
    # PORT_RANGE has a default in the template, which EG's value replaces (extend_pod_env).
    assert {"name": "PORT_RANGE", "value": "0..0"} in sentry["env"]
    # The kernel runs in the other container; both mount the ipc directory the sentry names.
    assert "--kernel-container" in args
    ipc = args[args.index("--ipc-dir") + 1]
    assert {m["mountPath"] for m in kernel["volumeMounts"] if m["name"] == "ipc"} == {ipc}
    assert f"{ipc}/kernel.json" in kernel["args"][0]
    parsed = build_parser().parse_args(args)
    assert parsed.kernel_container and str(parsed.ipc_dir) == ipc
