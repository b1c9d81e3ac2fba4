"""Loading and validating policies: the minimal file, defaults, digests, and every error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import rfc8785

from bedside.errors import PolicyError
from bedside.policy import load_dataset, load_policy

from .conftest import MINIMAL


def test_minimal_policy_is_accepted_exactly_as_written(policy_dir: Path) -> None:
    policy = load_policy(policy_dir / "policy.yaml")
    assert policy.id == "demo-hospital"
    assert policy.version == "bedside/v1"
    ds = policy.datasets["patients"]
    assert ds.path == (policy_dir / "data" / "patients.parquet").resolve()
    assert ds.path.is_absolute()
    assert ds.format == "parquet"
    assert ds.record_id == "mrn"
    assert ds.identifiers == ["mrn", "name", "dob", "postcode", "phone"]
    d = policy.disclosure
    assert (d.min_cell_count, d.round_counts_to, d.dominance_n, d.dominance_k) == (10, 5, 2, 0.9)
    assert (d.p_ratio, d.zeros_disclosive, d.extremes) == (0.1, True, "suppress")
    assert policy.outputs.mime_allow == ["text/plain", "text/html", "image/png", "application/json"]
    assert policy.outputs.max_output_bytes == 1_000_000
    assert policy.outputs.session_egress_bytes == 50_000_000
    assert (policy.errors, policy.shell) == ("scrub", "deny")


def test_defaults_fill_optional_fields(policy_dir: Path) -> None:
    policy = load_policy(policy_dir / "policy.yaml")
    assert policy.magics_deny == []
    assert policy.limits.memory_mb == 4096 and policy.limits.wall_seconds is None
    assert policy.session.max_egress_bytes == policy.outputs.session_egress_bytes
    assert policy.release.for_kind("model").mode == "review"  # release defaults
    assert policy.phi_patterns["email"] and not policy.phi_patterns["postcode"]
    data = policy.to_dict()
    assert data["datasets"]["patients"]["path"] == "data/patients.parquet"  # as written
    assert set(data) >= {"limits", "session", "release", "phi_patterns", "magics_deny"}


def test_digest_is_sha256_of_rfc8785_of_to_dict(policy_dir: Path) -> None:
    import hashlib

    policy = load_policy(policy_dir / "policy.yaml")
    expected = hashlib.sha256(rfc8785.dumps(policy.to_dict())).hexdigest()
    assert policy.digest == "sha256:" + expected
    json.loads(policy.canonical_json())


def test_digest_ignores_key_order_comments_and_defaults_spelled_out(policy_dir: Path) -> None:
    base = load_policy(policy_dir / "policy.yaml").digest
    reordered = "\n".join(reversed(MINIMAL.split("\nerrors: scrub\n")))
    lines = MINIMAL.splitlines()
    # Same settings: comments, flow style, reordered top-level keys, explicit defaults.
    variant = (
        "# custodian: J. Bloggs\n"
        "shell: deny   # no shell\n"
        "errors: scrub\n" + "\n".join(lines[:-2]) + "\nmagics_deny: []\nlimits: {memory_mb: 4096}\n"
    )
    (policy_dir / "variant.yaml").write_text(variant)
    assert load_policy(policy_dir / "variant.yaml").digest == base
    assert reordered  # the split above is only a sanity check of the fixture text
    (policy_dir / "changed.yaml").write_text(
        MINIMAL.replace("min_cell_count: 10", "min_cell_count: 11")
    )
    assert load_policy(policy_dir / "changed.yaml").digest != base


def test_degrees_of_freedom_setting_keeps_default_digests(policy_dir: Path) -> None:
    """`min_degrees_of_freedom` (ACRO's safe_dof_threshold, default 10) is read, and written to
    the normalised policy only when set otherwise: older policies keep their digests."""
    base = load_policy(policy_dir / "policy.yaml")
    assert base.disclosure.min_degrees_of_freedom == 10
    assert "min_degrees_of_freedom" not in base.to_dict()["disclosure"]
    for value, same in ((10, True), (20, False)):
        (policy_dir / "dof.yaml").write_text(
            MINIMAL.replace(
                "min_cell_count: 10", f"min_cell_count: 10\n  min_degrees_of_freedom: {value}"
            )
        )
        loaded = load_policy(policy_dir / "dof.yaml")
        assert loaded.disclosure.min_degrees_of_freedom == value
        assert (loaded.digest == base.digest) is same


def test_digest_does_not_depend_on_where_the_policy_lives(
    policy_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "policy.yaml").write_text(MINIMAL)
    a = load_policy(policy_dir / "policy.yaml").digest
    b = load_policy(other / "policy.yaml", check_files=False).digest
    assert a == b


def _bad(policy_dir: Path, text: str) -> PolicyError:
    path = policy_dir / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert err.path == str(path)
    assert err.fix, "every policy error says how to fix it"
    assert str(path) in err.diagnostics()
    return err


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


MALFORMED = [
    # (description, replace-from, replace-to, line containing, words in message, words in fix)
    ("unknown key", "  p_ratio: 0.1", "  p_ration: 0.1", "p_ration", "unknown key", "p_ratio"),
    ("unknown top key", "errors: scrub", "error: scrub", "error: scrub", "unknown key", "errors"),
    (
        "wrong type",
        "min_cell_count: 10",
        "min_cell_count: ten",
        "min_cell_count",
        "whole number",
        "min_cell_count",
    ),
    (
        "bool as number",
        "min_cell_count: 10",
        "min_cell_count: true",
        "min_cell_count",
        "whole number",
        "",
    ),
    ("out of range", "p_ratio: 0.1", "p_ratio: 1.5", "p_ratio", "above the maximum", "at most"),
    (
        "zero threshold",
        "min_cell_count: 10",
        "min_cell_count: 0",
        "min_cell_count",
        "below the minimum",
        "at least",
    ),
    ("dominance k", "{n: 2, k: 0.9}", "{n: 2, k: 0}", "dominance", "greater than", ""),
    (
        "zero degrees of freedom",
        "min_cell_count: 10",
        "min_cell_count: 10\n  min_degrees_of_freedom: 0",
        "min_degrees_of_freedom",
        "below the minimum",
        "at least",
    ),
    (
        "bad choice",
        "extremes: suppress",
        "extremes: hide",
        "extremes",
        "'suppress' or 'allow'",
        "extremes: suppress",
    ),
    (
        "typo choice",
        "errors: scrub",
        "errors: scrubb",
        "errors:",
        "'scrub' or 'full'",
        "did you mean 'scrub'",
    ),
    (
        "unknown version",
        "version: bedside/v1",
        "version: bedside/v2",
        "version",
        "unknown policy version",
        "bedside/v1",
    ),
    (
        "list as string",
        "identifiers: [mrn, name, dob, postcode, phone]",
        "identifiers: mrn",
        "identifiers",
        "must be a list",
        "[",
    ),
    (
        "identifier not a column",
        "[mrn, name, dob, postcode, phone]",
        "[mrn, name, dob, postcode, telephone]",
        "identifiers",
        "'telephone' is not a column",
        "phone",
    ),
    (
        "record id not a column",
        "record_id: mrn",
        "record_id: patient_id",
        "record_id",
        "not a column",
        "columns are",
    ),
    (
        "missing file",
        "data/patients.parquet",
        "data/missing.parquet",
        "path:",
        "does not exist",
        "relative to the policy",
    ),
    (
        "unknown extension",
        "data/patients.parquet",
        "data/patients.xlsx",
        "path:",
        "format",
        "format: parquet",
    ),
    (
        "bad mime",
        "image/png, application/json",
        "image/png, png",
        "mime_allow",
        "not a MIME type",
        "type/subtype",
    ),
    (
        "svg refused",
        "image/png, application/json",
        "image/png, image/svg+xml",
        "mime_allow",
        "svg",
        "image/png",
    ),
    (
        "duplicate key",
        "errors: scrub",
        "errors: scrub\nerrors: full",
        "errors: full",
        "appears twice",
        "keep one",
    ),
    (
        "output above session",
        "max_output_bytes: 1000000",
        "max_output_bytes: 60000000",
        "max_output_bytes",
        "larger than",
        "lower",
    ),
    (
        "yaml syntax",
        "  dominance: {n: 2, k: 0.9}",
        "  dominance: {n: 2, k: 0.9",
        "p_ratio",
        "line 11",
        "brackets",
    ),
    (
        "duplicate identifier",
        "[mrn, name, dob, postcode, phone]",
        "[mrn, name, mrn]",
        "identifiers",
        "listed twice",
        "once",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line_has", "message_has", "fix_has"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_policy_names_file_line_and_fix(
    policy_dir: Path, old: str, new: str, line_has: str, message_has: str, fix_has: str
) -> None:
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)
    err = _bad(policy_dir, text)
    assert err.line == _line_of(text, line_has), err.diagnostics()
    assert message_has.lower() in err.message.lower(), err.diagnostics()
    assert fix_has.lower() in err.fix.lower(), err.diagnostics()


@pytest.mark.parametrize(
    ("text", "message_has"),
    [
        ("", "empty"),
        ("- just\n- a list\n", "mapping"),
        ("version: bedside/v1\nid: x\n", "missing required key 'datasets'"),
        ("id: x\ndatasets: {}\n", "missing required key 'version'"),
        ("version: bedside/v1\nid: x\ndatasets: {}\n", "map each dataset"),
        (
            "version: bedside/v1\nid: x\ndatasets:\n  p:\n    path: a.csv\n    record_id: id\n"
            "    identifiers: []\n",
            "lists no identifiers",
        ),
        ("version: bedside/v1\nid: !!python/name:os.system x\ndatasets: {}\n", "tag"),
    ],
)
def test_structural_errors(policy_dir: Path, text: str, message_has: str) -> None:
    err = _bad(policy_dir, text)
    assert message_has.lower() in err.diagnostics().lower()
    assert err.line is not None


def test_session_ceiling_cannot_exceed_egress(policy_dir: Path) -> None:
    text = MINIMAL + "session:\n  max_egress_bytes: 60000000\n"
    err = _bad(policy_dir, text)
    assert err.line == _line_of(text, "max_egress_bytes")


def test_optional_sections_parse(policy_dir: Path) -> None:
    text = MINIMAL + (
        "magics_deny: ['%timeit', env]\n"
        "limits: {memory_mb: 2048, cpu_seconds: 600, processes: 32, wall_seconds: 3600}\n"
        "session: {max_cells: 100, max_cpu_seconds: 60, max_egress_bytes: 1000000}\n"
        "release:\n  model: {mode: review, max_bytes: 50 MB}\n  table: {mode: auto}\n"
        "phi_patterns: {postcode: true, email: false}\n"
    )
    (policy_dir / "full.yaml").write_text(text)
    policy = load_policy(policy_dir / "full.yaml")
    assert policy.magics_deny == ["timeit", "env"]
    assert (policy.limits.memory_mb, policy.limits.wall_seconds) == (2048, 3600)
    assert policy.session.max_cells == 100
    assert policy.release.for_kind("model").max_bytes == 50_000_000
    assert policy.release.for_kind("table").mode == "auto"
    assert policy.phi_patterns["postcode"] and not policy.phi_patterns["email"]
    assert "email" not in policy.enabled_phi_patterns
    assert policy.digest.startswith("sha256:")


def test_unknown_phi_pattern_suggests(policy_dir: Path) -> None:
    err = _bad(policy_dir, MINIMAL + "phi_patterns: {emails: true}\n")
    assert "did you mean 'email'" in err.fix


def test_csv_dataset_and_check_files_off(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,who\n007,Ann Lee\n")
    text = (
        "version: bedside/v1\nid: t\ndatasets:\n  people:\n    path: t.csv\n"
        "    record_id: id\n    identifiers: [id, who]\n"
    )
    (tmp_path / "p.yaml").write_text(text)
    policy = load_policy(tmp_path / "p.yaml")
    ds = policy.datasets["people"]
    assert ds.format == "csv"
    frame = load_dataset(ds)
    assert frame["id"].tolist() == ["007"]  # identifiers keep their leading zeros
    assert frame["id"].map(type).eq(str).all()
    (tmp_path / "t.csv").unlink()
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "p.yaml")
    assert load_policy(tmp_path / "p.yaml", check_files=False).datasets["people"].format == "csv"


def test_load_dataset_identifiers_are_str(policy_dir: Path) -> None:
    frame = pd.DataFrame(
        {
            "mrn": [12345, 67890],
            "name": ["A B", None],
            "dob": pd.to_datetime(["1956-03-12", "1960-01-02"]),
            "postcode": ["X1 1AA", "Y2 2BB"],
            "phone": ["1", "2"],
        }
    )
    frame.to_parquet(policy_dir / "data" / "patients.parquet")
    policy = load_policy(policy_dir / "policy.yaml")
    out = load_dataset(policy.datasets["patients"])
    assert out["mrn"].tolist() == ["12345", "67890"]
    assert out["dob"].tolist() == ["1956-03-12", "1960-01-02"]
    assert out["name"].tolist()[0] == "A B" and out["name"].isna().tolist()[1]
