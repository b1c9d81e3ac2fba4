"""A plain-language summary of a policy, for the custodian who signs it off.

`explain(policy)` says what the datasets are, which columns identify a person, what the guard
treats as disclosive, the byte and session budgets, what may be displayed, and whether shell
commands and errors are allowed through — in sentences, with the policy's own numbers.
"""

from __future__ import annotations

import textwrap

from bedside.policy.model import Policy

_PHI_NAMES = {
    "email": "e-mail addresses",
    "phone": "phone numbers (UK, North American and international shapes)",
    "ssn": "US social security numbers",
    "nhs_number": "NHS numbers (with a valid check digit)",
    "mrn": "labelled medical record numbers (e.g. 'MRN: 1234567')",
    "dob": "labelled dates of birth (e.g. 'DOB 12/03/1956')",
    "postcode": "UK postcodes",
    "ip_address": "IPv4 addresses",
}


def _bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n:,} bytes ({n / size:.1f} {unit})"
    return f"{n:,} bytes"


def _seconds(n: int) -> str:
    if n >= 3600:
        return f"{n:,} s ({n / 3600:.1f} h)"
    if n >= 60:
        return f"{n:,} s ({n / 60:.0f} min)"
    return f"{n} s"


def explain(policy: Policy) -> str:
    """The policy as a custodian-readable text (several short sections)."""
    d = policy.disclosure
    o = policy.outputs
    lines: list[str] = [
        f"Policy '{policy.id}' ({policy.version})",
        f"  file:   {policy.path}",
        f"  digest: {policy.digest}",
        "",
        "Protected datasets",
    ]
    for ds in policy.datasets.values():
        present = "found" if ds.path.is_file() else "MISSING"
        lines += [
            f"  - {ds.name}: {ds.written_path} ({ds.format}, file {present})",
            f"    one person per distinct '{ds.record_id}'; cells are counted in persons.",
            f"    identifying columns: {', '.join(ds.identifiers)}. Their values never leave:",
            "    every output is searched for them (any case, spacing, date or phone format,",
            "    and inside base64, hex, URL-encoding, integers and reversed text).",
        ]
    lines += ["", "What counts as disclosive"]
    lines.append(
        "  - Row-level data of a protected table in any form (tables, lists, JSON, CSV,"
        " text, plots of individual points)."
    )
    lines.append(
        f"  - A statistic or table cell based on fewer than {d.min_cell_count} persons"
        " (threshold rule)."
    )
    if d.round_counts_to > 1:
        lines.append(f"  - Counts are rounded to the nearest {d.round_counts_to} before release.")
    else:
        lines.append("  - Counts are released unrounded.")
    lines.append(
        f"  - Dominance (N-K): a sum where the largest {d.dominance_n} contributors make up more"
        f" than {d.dominance_k:.0%} of the cell total."
    )
    lines.append(
        f"  - P-ratio: a sum where the total less the two largest contributions is under"
        f" {d.p_ratio:.0%} of the largest (its size could be estimated closely)."
    )
    if d.zeros_disclosive:
        lines.append(
            "  - Zeros and 100 % cells: a cell with no persons or with every person of its"
            " row/column is disclosive (it reveals a fact about everyone in the group)."
        )
    else:
        lines.append("  - Zero cells are not treated as disclosive.")
    if d.extremes == "suppress":
        lines.append(
            "  - Extremes: minimum and maximum of protected values are suppressed (they belong"
            " to one person)."
        )
    else:
        lines.append("  - Extremes: minimum and maximum values may be released.")
    lines.append(
        f"  - Model fits (regressions, GLMs, correlations) with fewer than"
        f" {d.min_degrees_of_freedom} residual degrees of freedom (records minus parameters),"
        " and tests over groups under the threshold; fitted values, residuals and predictions"
        " on protected rows count as rows."
    )
    differencing = (
        "  - Differencing: an aggregate whose records differ from an earlier released one by"
        f" fewer than {d.min_cell_count} persons is refused."
    )
    lines.append(differencing)
    phi = [_PHI_NAMES.get(k, k) for k in policy.enabled_phi_patterns]
    if phi:
        lines.append("  - Text shaped like personal data, whatever its source: " + "; ".join(phi))
    lines += [
        "",
        "What may be shown",
        "  - Output types: " + ", ".join(o.mime_allow) + " (anything else is dropped; SVG is"
        " never allowed).",
        f"  - One output at most {_bytes(o.max_output_bytes)}.",
        f"  - The whole session at most {_bytes(o.session_egress_bytes)} leaving the hospital.",
        "",
        "Budget ceilings a researcher may declare for a session",
        f"  - at most {policy.session.max_cells:,} cells,"
        f" {_seconds(policy.session.max_cpu_seconds)} of CPU,"
        f" {_bytes(policy.session.max_egress_bytes)} of output.",
        "",
        "Kernel sandbox limits",
        f"  - memory {policy.limits.memory_mb:,} MB, CPU {_seconds(policy.limits.cpu_seconds)},"
        f" {policy.limits.processes:,} processes,"
        + (
            f" wall clock {_seconds(policy.limits.wall_seconds)}."
            if policy.limits.wall_seconds
            else " no wall-clock limit."
        ),
        "",
        "Code and errors",
    ]
    if policy.errors == "scrub":
        lines.append(
            "  - Errors are scrubbed: the researcher sees the exception type, their own code"
            " lines and column names, never values; %xmode Verbose, %debug and %whos are"
            " refused."
        )
    else:
        lines.append(
            "  - Errors are shown in FULL, values included (only the identifier and PHI scan"
            " still applies). Use this for unprotected or test data only."
        )
    if policy.shell == "deny":
        lines.append("  - Shell commands (!cmd, %%bash, %sx, %system) are refused.")
    else:
        lines.append(
            "  - Shell commands are allowed; their output passes the same guard as any output."
        )
    if policy.magics_deny:
        lines.append("  - Also refused: " + ", ".join("%" + m for m in policy.magics_deny) + ".")
    lines += ["", "Releases"]
    formats = {
        "model": "torch as safetensors, scikit-learn as skops",
        "table": "CSV after the disclosure rules",
        "figure": "PNG after the figure check",
    }
    for kind, rules in policy.release.kinds.items():
        if rules.mode == "deny":
            lines.append(f"  - A {kind} can never leave (release.{kind}.mode: deny).")
            continue
        how = (
            "as soon as its checks pass"
            if rules.mode == "auto"
            else f"once {rules.approvals_required} custodian(s) other than the requester approve"
        )
        text = f"  - A {kind} ({formats[kind]}) leaves {how}; at most {rules.max_bytes} bytes."
        if kind == "model":
            text += (
                " Refused: models that store training rows (k-NN, SVM), parameters shaped"
                " like or holding the training data, identifier values in vocabularies,"
                f" tree leaves under {rules.min_leaf_size} records"
            )
            text += (
                f", a membership-inference attack AUC above {rules.mia_auc_max}."
                if rules.mia_auc_max is not None
                else "."
            )
        lines.append(text)
    wrapped = [
        textwrap.fill(line, width=96, subsequent_indent="    ") if line.startswith("  - ") else line
        for line in lines
    ]
    return "\n".join(wrapped) + "\n"
