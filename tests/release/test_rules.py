"""The `release:` section of the policy: defaults, sizes, and errors that name file, line, fix."""

from __future__ import annotations

import pytest

from bedside.errors import PolicyError
from bedside.policy.release import ReleaseRules, parse_size


def test_defaults_review_models_with_two_approvers():
    rules = ReleaseRules.from_dict(None)
    model = rules.for_kind("model")
    assert (model.mode, model.approvals_required, model.min_leaf_size, model.mia_auc_max) == (
        "review",
        2,
        10,
        0.6,
    )


def test_section_is_parsed_per_kind():
    rules = ReleaseRules.from_dict(
        {
            "approvals_required": 3,
            "model": {
                "mode": "review",
                "max_bytes": "150 MB",
                "min_leaf_size": 20,
                "mia_auc_max": None,
            },
            "table": {"mode": "auto", "approvals_required": 1},
            "figure": {"mode": "deny"},
        }
    )
    assert rules.for_kind("model").max_bytes == 150_000_000
    assert rules.for_kind("model").approvals_required == 3
    assert rules.for_kind("model").mia_auc_max is None
    assert rules.for_kind("table").approvals_required == 1
    assert rules.for_kind("figure").mode == "deny"
    assert "min_leaf_size" not in rules.to_dict()["table"]


@pytest.mark.parametrize(
    ("section", "keys", "fix"),
    [
        ({"model": {"mode": "sometimes"}}, ("release", "model", "mode"), "auto, review, deny"),
        ({"model": {"max_bytes": "lots"}}, ("release", "model", "max_bytes"), "200 MB"),
        (
            {"model": {"approvals_required": 0}},
            ("release", "model", "approvals_required"),
            "two-person rule",
        ),
        ({"model": {"mia_auc_max": 0.3}}, ("release", "model", "mia_auc_max"), "0.5 (chance)"),
        ({"table": {"min_leaf_size": 5}}, ("release", "table", "min_leaf_size"), "use one of"),
        ({"models": {}}, ("release", "models"), "use one of"),
    ],
)
def test_mistakes_name_file_line_and_fix(section, keys, fix):
    lines = {keys: 42}
    with pytest.raises(PolicyError) as err:
        ReleaseRules.from_dict(section, path="policy.yaml", line_of=lambda k: lines.get(k))
    assert err.value.path == "policy.yaml"
    assert err.value.line == 42
    assert fix in err.value.fix
    assert err.value.diagnostics().startswith("policy.yaml:42: ")


def test_sizes():
    assert parse_size("512 KiB") == 512 * 1024
    assert parse_size(1000) == 1000
    with pytest.raises(PolicyError):
        parse_size("-3 MB")


POLICY = """\
version: bedside/v1
id: st-elsewhere
datasets:
  patients:
    path: patients.csv
    record_id: mrn
    identifiers: [mrn, name]
disclosure:
  min_cell_count: 10
outputs:
  mime_allow: [text/plain]
release:
  approvals_required: 2
  model:
    mode: review
    max_bytes: 50 MB
    mia_auc_max: 0.65
  table:
    mode: {table_mode}
"""


def _write(tmp_path, table_mode):
    (tmp_path / "patients.csv").write_text("mrn,name,age\nMRN0000001,Ada Lovelace,70\n")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(table_mode=table_mode))
    return path


def test_load_policy_reads_the_release_section(tmp_path):
    from bedside.policy import load_policy

    policy = load_policy(_write(tmp_path, "auto"))
    assert policy.release.for_kind("model").max_bytes == 50_000_000
    assert policy.release.for_kind("model").mia_auc_max == 0.65
    assert policy.release.for_kind("table").mode == "auto"
    assert policy.to_dict()["release"]["model"]["approvals_required"] == 2


def test_load_policy_points_at_the_bad_release_line(tmp_path):
    from bedside.policy import load_policy

    path = _write(tmp_path, "whenever")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.line == 19  # the `mode:` line under `table:`
    assert "release.table.mode" in err.value.message
    assert err.value.path == str(path)
