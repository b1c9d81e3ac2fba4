"""The custodian's policy (`version: bedside/v1`): its typed model, loading and validation.

A policy is YAML written by a hospital custodian. `load_policy` reads it with line numbers,
checks every key and value, fills defaults and returns a frozen `Policy`. Every mistake raises
`PolicyError` naming the file, the line and the fix. `Policy.digest` is the SHA-256 of the RFC
8785 JSON of `Policy.to_dict()` (the normalised policy, defaults filled in), so it does not change
with key order, comments or formatting, and the ledger can bind a session to it.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import rfc8785

from bedside.errors import PolicyError
from bedside.policy._yaml import Node, read_yaml
from bedside.policy.release import ReleaseRules

VERSION = "bedside/v1"
SUPPORTED_VERSIONS = (VERSION,)

# File extensions we can infer a dataset format from.
_FORMAT_BY_SUFFIX = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
}
FORMATS = ("parquet", "csv", "tsv")

DEFAULT_MIME_ALLOW = ("text/plain", "text/html", "image/png", "application/json")

# PHI pattern families `bedside.policy.phi` knows, with whether they are on by default. Postcodes
# and IP addresses are off by default: aggregated outputs legitimately name postcode districts,
# and version strings look like addresses.
PHI_PATTERN_DEFAULTS: dict[str, bool] = {
    "email": True,
    "phone": True,
    "ssn": True,
    "nhs_number": True,
    "mrn": True,
    "dob": True,
    "postcode": False,
    "ip_address": False,
}


@dataclass(frozen=True)
class Dataset:
    """One protected table: where it lives and which of its columns identify a person."""

    name: str
    path: Path  # absolute
    format: str
    record_id: str
    identifiers: list[str]
    written_path: str = ""  # the path as written in the policy (relative to it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.written_path or str(self.path),
            "format": self.format,
            "record_id": self.record_id,
            "identifiers": list(self.identifiers),
        }


@dataclass(frozen=True)
class DisclosureRules:
    """Statistical disclosure control for aggregates; ACRO's rules and defaults."""

    min_cell_count: int = 10
    round_counts_to: int = 5
    dominance_n: int = 2
    dominance_k: float = 0.9
    p_ratio: float = 0.1
    zeros_disclosive: bool = True
    extremes: str = "suppress"
    # ACRO's `safe_dof_threshold`: a model fit (regression, GLM, ...) needs at least this many
    # residual degrees of freedom to be released.
    min_degrees_of_freedom: int = 10

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "min_cell_count": self.min_cell_count,
            "round_counts_to": self.round_counts_to,
            "dominance": {"n": self.dominance_n, "k": self.dominance_k},
            "p_ratio": self.p_ratio,
            "zeros_disclosive": self.zeros_disclosive,
            "extremes": self.extremes,
        }
        # Written only when set: the digests of policies (and the ledgers bound to them) from
        # before this key existed stay what they were.
        if self.min_degrees_of_freedom != DisclosureRules.min_degrees_of_freedom:
            out["min_degrees_of_freedom"] = self.min_degrees_of_freedom
        return out


@dataclass(frozen=True)
class OutputRules:
    """What may leave the hospital at all: MIME types and byte budgets."""

    mime_allow: list[str] = field(default_factory=lambda: list(DEFAULT_MIME_ALLOW))
    max_output_bytes: int = 1_000_000
    session_egress_bytes: int = 50_000_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "mime_allow": list(self.mime_allow),
            "max_output_bytes": self.max_output_bytes,
            "session_egress_bytes": self.session_egress_bytes,
        }


@dataclass(frozen=True)
class Limits:
    """Resource limits of the sandboxed kernel process (rlimits / pod limits)."""

    memory_mb: int = 4096
    cpu_seconds: int = 28_800
    processes: int = 256
    wall_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "processes": self.processes,
            "wall_seconds": self.wall_seconds,
        }


@dataclass(frozen=True)
class SessionLimits:
    """Ceilings for the budget a researcher declares in their intent."""

    max_cells: int = 2000
    max_cpu_seconds: int = 28_800
    max_egress_bytes: int = 50_000_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_cells": self.max_cells,
            "max_cpu_seconds": self.max_cpu_seconds,
            "max_egress_bytes": self.max_egress_bytes,
        }


@dataclass(frozen=True)
class Policy:
    """A validated, normalised custodian policy."""

    id: str
    version: str
    path: Path
    datasets: dict[str, Dataset]
    disclosure: DisclosureRules
    outputs: OutputRules
    errors: str = "scrub"
    shell: str = "deny"
    magics_deny: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    session: SessionLimits = field(default_factory=SessionLimits)
    release: ReleaseRules = field(default_factory=ReleaseRules)
    phi_patterns: dict[str, bool] = field(default_factory=lambda: dict(PHI_PATTERN_DEFAULTS))

    def to_dict(self) -> dict[str, Any]:
        """The normalised policy: every field, defaults filled, dataset paths as written."""
        return {
            "version": self.version,
            "id": self.id,
            "datasets": {name: ds.to_dict() for name, ds in sorted(self.datasets.items())},
            "disclosure": self.disclosure.to_dict(),
            "outputs": self.outputs.to_dict(),
            "errors": self.errors,
            "shell": self.shell,
            "magics_deny": list(self.magics_deny),
            "limits": self.limits.to_dict(),
            "session": self.session.to_dict(),
            "release": self.release.to_dict(),
            "phi_patterns": dict(sorted(self.phi_patterns.items())),
        }

    def canonical_json(self) -> bytes:
        """RFC 8785 (JCS) bytes of `to_dict()`: what the digest is taken over."""
        return rfc8785.dumps(self.to_dict())

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_json()).hexdigest()

    @property
    def enabled_phi_patterns(self) -> list[str]:
        return sorted(k for k, on in self.phi_patterns.items() if on)


# --------------------------------------------------------------------------- validation helpers

T = TypeVar("T")


class _Reader:
    """Typed access to one mapping of the policy, reporting errors at the right line."""

    def __init__(self, node: Node, where: str, section: str, allowed: Sequence[str]) -> None:
        self.node = node
        self.where = where
        self.section = section
        self.allowed = list(allowed)
        if node.kind != "mapping":
            raise self.error(
                f"'{section}' must be a mapping of keys to values",
                node.line,
                f"write '{section}:' followed by indented `key: value` lines",
            )
        for key, line in node.key_lines.items():
            if key not in self.allowed:
                close = difflib.get_close_matches(key, self.allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else ""
                choices = ", ".join(self.allowed)
                raise self.error(
                    f"unknown key '{key}' in {self._in()}",
                    line,
                    (hint + " " if hint else "") + f"allowed keys here: {choices}",
                )

    def _in(self) -> str:
        return "the policy" if self.section == "" else f"'{self.section}'"

    def _name(self, key: str) -> str:
        return key if not self.section else f"{self.section}.{key}"

    def error(self, message: str, line: int | None, fix: str) -> PolicyError:
        return PolicyError(message, path=self.where, line=line, fix=fix)

    def has(self, key: str) -> bool:
        return key in self.node.key_lines

    def child(self, key: str) -> Node | None:
        value: Node | None = self.node.value.get(key)
        return value

    def line_of(self, key: str) -> int:
        line: int = self.node.key_lines.get(key, self.node.line)
        return line

    def require(self, key: str, example: str) -> Node:
        child = self.child(key)
        if child is None:
            raise self.error(
                f"missing required key '{self._name(key)}'",
                self.node.line,
                f"add `{example}` to {self._in()}",
            )
        if child.kind == "scalar" and child.value is None:
            raise self.error(
                f"'{self._name(key)}' is empty", child.line, f"write a value, e.g. `{example}`"
            )
        return child

    def string(self, key: str, default: str | None = None, *, example: str = "") -> str:
        child = self.child(key) if default is not None else self.require(key, example)
        if child is None:
            assert default is not None
            return default
        if child.kind != "scalar" or not isinstance(child.value, str) or not child.value.strip():
            raise self.error(
                f"'{self._name(key)}' must be a non-empty text value",
                child.line,
                f"write e.g. `{example or key + ': ...'}`",
            )
        return str(child.value).strip()

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        child = self.child(key)
        if child is None:
            return default
        value = child.value
        if isinstance(value, bool) and key == "shell":
            # YAML 1.1 reads `deny`/`allow` as strings, but `no`/`off` become booleans.
            value = "allow" if value else "deny"
        if child.kind != "scalar" or not isinstance(value, str) or value not in choices:
            options = " or ".join(f"'{c}'" for c in choices)
            shown = value if child.kind == "scalar" else child.kind
            close = (
                difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
                if isinstance(value, str)
                else []
            )
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise self.error(
                f"'{self._name(key)}' must be {options}, not {shown!r}",
                child.line,
                f"{hint}write `{key}: {choices[0]}`",
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        child = self.child(key)
        if child is None:
            return default
        if child.kind != "scalar" or not isinstance(child.value, bool):
            raise self.error(
                f"'{self._name(key)}' must be true or false, not {_shown(child)}",
                child.line,
                f"write `{key}: true` or `{key}: false`",
            )
        return bool(child.value)

    def integer(
        self,
        key: str,
        default: int | None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        allow_null: bool = False,
    ) -> int | None:
        child = self.child(key)
        if child is None:
            return default
        value = child.value
        if allow_null and child.kind == "scalar" and value is None:
            return None
        if child.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                f"'{self._name(key)}' must be a whole number, not {_shown(child)}",
                child.line,
                f"write e.g. `{key}: {default if default is not None else minimum or 1}`"
                " (no quotes, no units, no underscores needed)",
            )
        self._range(key, child, value, minimum, maximum)
        return int(value)

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float:
        child = self.child(key)
        if child is None:
            return default
        value = child.value
        if (
            child.kind != "scalar"
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(float(value))
        ):
            raise self.error(
                f"'{self._name(key)}' must be a number, not {_shown(child)}",
                child.line,
                f"write e.g. `{key}: {default}`",
            )
        if exclusive_minimum and minimum is not None and float(value) <= minimum:
            raise self.error(
                f"'{self._name(key)}' must be greater than {minimum}, not {value}",
                child.line,
                f"write a value above {minimum}, e.g. `{key}: {default}`",
            )
        self._range(key, child, float(value), minimum, maximum)
        return float(value)

    def _range(
        self,
        key: str,
        child: Node,
        value: float,
        minimum: float | None,
        maximum: float | None,
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.error(
                f"'{self._name(key)}' is {value}, below the minimum {minimum}",
                child.line,
                f"use a value of at least {minimum}",
            )
        if maximum is not None and value > maximum:
            raise self.error(
                f"'{self._name(key)}' is {value}, above the maximum {maximum}",
                child.line,
                f"use a value of at most {maximum}",
            )

    def string_list(
        self,
        key: str,
        default: Sequence[str],
        *,
        example: str,
        check: Callable[[str, int], None] | None = None,
    ) -> list[str]:
        child = self.child(key)
        if child is None:
            return list(default)
        if child.kind == "scalar" and isinstance(child.value, str):
            raise self.error(
                f"'{self._name(key)}' must be a list",
                child.line,
                f"write it in brackets: `{key}: [{example}]`",
            )
        if child.kind != "sequence":
            raise self.error(
                f"'{self._name(key)}' must be a list of names",
                child.line,
                f"write e.g. `{key}: [{example}]`",
            )
        out: list[str] = []
        for item in child.value:
            if item.kind != "scalar" or not isinstance(item.value, str) or not item.value.strip():
                raise self.error(
                    f"every entry of '{self._name(key)}' must be a text value, not {item.value!r}",
                    item.line,
                    f"write e.g. `{key}: [{example}]` (quote values that look like numbers)",
                )
            value = item.value.strip()
            if value in out:
                raise self.error(
                    f"'{value}' is listed twice in '{self._name(key)}'",
                    item.line,
                    "list each entry once",
                )
            if check is not None:
                check(value, item.line)
            out.append(value)
        return out

    def section_reader(self, key: str, allowed: Sequence[str]) -> _Reader | None:
        child = self.child(key)
        if child is None:
            return None
        name = key if not self.section else f"{self.section}.{key}"
        return _Reader(child, self.where, name, allowed)


# --------------------------------------------------------------------------- loading

_TOP_KEYS = (
    "version",
    "id",
    "datasets",
    "disclosure",
    "outputs",
    "errors",
    "shell",
    "magics_deny",
    "limits",
    "session",
    "release",
    "phi_patterns",
)
_DATASET_KEYS = ("path", "format", "record_id", "identifiers")
_DISCLOSURE_KEYS = (
    "min_cell_count",
    "round_counts_to",
    "dominance",
    "p_ratio",
    "zeros_disclosive",
    "extremes",
    "min_degrees_of_freedom",
)
_OUTPUT_KEYS = ("mime_allow", "max_output_bytes", "session_egress_bytes")
_LIMIT_KEYS = ("memory_mb", "cpu_seconds", "processes", "wall_seconds")
_SESSION_KEYS = ("max_cells", "max_cpu_seconds", "max_egress_bytes")


def load_policy(path: str | Path, *, check_files: bool = True) -> Policy:
    """Load and validate a policy file.

    With `check_files` (the default) every dataset file must exist and its columns must include
    the record id and the identifiers. A reviewer checking a policy digest away from the data
    passes `check_files=False`.
    """
    source = Path(path)
    where = str(source)
    root = read_yaml(source)
    if root.kind != "mapping":
        raise PolicyError(
            "a policy must be a mapping of keys such as `version:`, `id:` and `datasets:`",
            path=where,
            line=root.line,
            fix="start from the minimal policy in docs/custodian/policy.md",
        )
    top = _Reader(root, where, "", _TOP_KEYS)
    version = _read_version(top)
    policy_id = top.string("id", example="id: my-hospital")
    base = source.resolve().parent

    datasets = _read_datasets(top, base, check_files)
    disclosure = _read_disclosure(top)
    outputs = _read_outputs(top)
    errors = top.choice("errors", ("scrub", "full"), "scrub")
    shell = top.choice("shell", ("deny", "allow"), "deny")
    magics = [
        m.lstrip("%") for m in top.string_list("magics_deny", (), example="'%timeit', '%env'")
    ]
    limits = _read_limits(top)
    session = _read_session(top, outputs)
    release = _read_release(top)
    phi = _read_phi(top)
    return Policy(
        id=policy_id,
        version=version,
        path=source.resolve(),
        datasets=datasets,
        disclosure=disclosure,
        outputs=outputs,
        errors=errors,
        shell=shell,
        magics_deny=magics,
        limits=limits,
        session=session,
        release=release,
        phi_patterns=phi,
    )


def _read_version(top: _Reader) -> str:
    child = top.require("version", f"version: {VERSION}")
    if child.value not in SUPPORTED_VERSIONS:
        raise top.error(
            f"unknown policy version {child.value!r}",
            child.line,
            f"this bedside reads `version: {VERSION}`",
        )
    return str(child.value)


def _read_datasets(top: _Reader, base: Path, check_files: bool) -> dict[str, Dataset]:
    node = top.require("datasets", "datasets: {patients: {path: ..., record_id: ...}}")
    if node.kind != "mapping" or not node.value:
        raise top.error(
            "'datasets' must map each dataset name to its description",
            node.line,
            "write `datasets:` then an indented name such as `patients:` with `path:`, "
            "`record_id:` and `identifiers:`",
        )
    out: dict[str, Dataset] = {}
    for name, ds_node in node.value.items():
        section = f"datasets.{name}"
        if not name.isidentifier():
            raise top.error(
                f"dataset name '{name}' is not a plain identifier",
                node.key_lines[name],
                "use letters, digits and underscores, e.g. `patients` or `lab_results`",
            )
        reader = _Reader(ds_node, top.where, section, _DATASET_KEYS)
        written = reader.string("path", example="path: data/patients.parquet")
        file_path = (base / written).resolve()
        fmt = _read_format(reader, written)
        record_id = reader.string("record_id", example="record_id: mrn")
        identifiers = reader.string_list(
            "identifiers", (), example="mrn, name, dob, postcode, phone"
        )
        if not identifiers:
            raise reader.error(
                f"dataset '{name}' lists no identifiers",
                reader.line_of("identifiers") if reader.has("identifiers") else ds_node.line,
                "list the columns that identify a person, e.g. "
                "`identifiers: [mrn, name, dob, postcode, phone]`",
            )
        if check_files:
            _check_dataset_file(reader, file_path, written, fmt, record_id, identifiers)
        out[name] = Dataset(name, file_path, fmt, record_id, identifiers, written)
    return out


def _read_format(reader: _Reader, written: str) -> str:
    if reader.has("format"):
        return reader.choice("format", FORMATS, "parquet")
    lower = written.lower()
    for suffix in sorted(_FORMAT_BY_SUFFIX, key=len, reverse=True):
        if lower.endswith(suffix):
            return _FORMAT_BY_SUFFIX[suffix]
    raise reader.error(
        f"cannot tell the format of '{written}' from its extension",
        reader.line_of("path"),
        "name the file .parquet or .csv, or add `format: parquet` / `format: csv`",
    )


def _check_dataset_file(
    reader: _Reader,
    file_path: Path,
    written: str,
    fmt: str,
    record_id: str,
    identifiers: list[str],
) -> None:
    if not file_path.is_file():
        raise reader.error(
            f"dataset file '{written}' does not exist (looked for {file_path})",
            reader.line_of("path"),
            "paths are relative to the policy file; fix the path or create the data "
            "(e.g. `bedside demo-data --out DIR`)",
        )
    try:
        columns = read_columns(file_path, fmt)
    except Exception as exc:  # a corrupt file must be reported, whatever the reader raised
        raise reader.error(
            f"cannot read the columns of '{written}' as {fmt} ({type(exc).__name__})",
            reader.line_of("path"),
            "check the file is a valid " + fmt + " file, or set `format:` to the right one",
        ) from None
    if record_id not in columns:
        raise reader.error(
            f"record_id '{record_id}' is not a column of '{written}'",
            reader.line_of("record_id"),
            _column_fix(record_id, columns),
        )
    id_node = reader.child("identifiers")
    assert id_node is not None
    for item in id_node.value:
        if item.value not in columns:
            raise reader.error(
                f"identifier '{item.value}' is not a column of '{written}'",
                item.line,
                _column_fix(str(item.value), columns),
            )


def _shown(node: Node) -> str:
    """A value as the custodian wrote it, for an error message (never a parser's Node)."""
    if node.kind == "scalar":
        return repr(node.value)
    return "a list" if node.kind == "sequence" else "a mapping"


def _column_fix(name: str, columns: list[str]) -> str:
    # `MRN` for `mrn` is the commonest slip: a case-insensitive match first
    same = [c for c in columns if c.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    shown = ", ".join(columns[:30]) + (" …" if len(columns) > 30 else "")
    return f"{hint}the file's columns are: {shown}"


def read_columns(path: Path, fmt: str) -> list[str]:
    """Column names of a dataset file, without reading its rows."""
    if fmt == "parquet":
        from bedside.policy._parquet import column_names

        try:
            names: list[str] = column_names(path)  # the footer, without importing pyarrow
            return names
        except (ValueError, UnicodeDecodeError):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    delimiter = "\t" if fmt == "tsv" else ","
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    return [h.strip() for h in header]


def _read_disclosure(top: _Reader) -> DisclosureRules:
    d = DisclosureRules()
    reader = top.section_reader("disclosure", _DISCLOSURE_KEYS)
    if reader is None:
        return d
    dom_n, dom_k = d.dominance_n, d.dominance_k
    dom = reader.section_reader("dominance", ("n", "k"))
    if dom is not None:
        dom_n = _int(dom.integer("n", d.dominance_n, minimum=1, maximum=100))
        dom_k = dom.number("k", d.dominance_k, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    rules = DisclosureRules(
        min_cell_count=_int(reader.integer("min_cell_count", d.min_cell_count, minimum=1)),
        round_counts_to=_int(reader.integer("round_counts_to", d.round_counts_to, minimum=0)),
        dominance_n=dom_n,
        dominance_k=dom_k,
        p_ratio=reader.number("p_ratio", d.p_ratio, minimum=0.0, maximum=1.0),
        zeros_disclosive=reader.boolean("zeros_disclosive", d.zeros_disclosive),
        extremes=reader.choice("extremes", ("suppress", "allow"), d.extremes),
        min_degrees_of_freedom=_int(
            reader.integer("min_degrees_of_freedom", d.min_degrees_of_freedom, minimum=1)
        ),
    )
    return rules


def _read_outputs(top: _Reader) -> OutputRules:
    d = OutputRules()
    reader = top.section_reader("outputs", _OUTPUT_KEYS)
    if reader is None:
        return d

    def check_mime(value: str, line: int) -> None:
        parts = value.split("/")
        if len(parts) != 2 or not all(p.strip() for p in parts) or " " in value:
            raise reader.error(
                f"'{value}' is not a MIME type",
                line,
                "write MIME types as type/subtype, e.g. text/plain or image/png",
            )
        if value == "image/svg+xml":
            raise reader.error(
                "image/svg+xml cannot be allowed: SVG carries the plotted coordinates as text",
                line,
                "allow image/png for figures instead",
            )

    mime = reader.string_list(
        "mime_allow", d.mime_allow, example="text/plain, image/png", check=check_mime
    )
    max_out = _int(reader.integer("max_output_bytes", d.max_output_bytes, minimum=1))
    egress = _int(reader.integer("session_egress_bytes", d.session_egress_bytes, minimum=1))
    if max_out > egress:
        raise reader.error(
            f"max_output_bytes ({max_out}) is larger than session_egress_bytes ({egress})",
            reader.line_of("max_output_bytes"),
            "one output cannot exceed the whole session's budget; lower max_output_bytes",
        )
    return OutputRules(mime, max_out, egress)


def _read_limits(top: _Reader) -> Limits:
    d = Limits()
    reader = top.section_reader("limits", _LIMIT_KEYS)
    if reader is None:
        return d
    return Limits(
        memory_mb=_int(reader.integer("memory_mb", d.memory_mb, minimum=64)),
        cpu_seconds=_int(reader.integer("cpu_seconds", d.cpu_seconds, minimum=1)),
        processes=_int(reader.integer("processes", d.processes, minimum=1, maximum=100_000)),
        wall_seconds=reader.integer("wall_seconds", None, minimum=1, allow_null=True),
    )


def _read_session(top: _Reader, outputs: OutputRules) -> SessionLimits:
    d = SessionLimits(max_egress_bytes=outputs.session_egress_bytes)
    reader = top.section_reader("session", _SESSION_KEYS)
    if reader is None:
        return d
    egress = _int(reader.integer("max_egress_bytes", d.max_egress_bytes, minimum=1))
    if egress > outputs.session_egress_bytes:
        raise reader.error(
            f"session.max_egress_bytes ({egress}) exceeds outputs.session_egress_bytes "
            f"({outputs.session_egress_bytes})",
            reader.line_of("max_egress_bytes"),
            "a researcher's budget ceiling cannot exceed the session egress limit; lower it",
        )
    return SessionLimits(
        max_cells=_int(reader.integer("max_cells", d.max_cells, minimum=1)),
        max_cpu_seconds=_int(reader.integer("max_cpu_seconds", d.max_cpu_seconds, minimum=1)),
        max_egress_bytes=egress,
    )


def _read_release(top: _Reader) -> ReleaseRules:
    child = top.child("release")
    if child is None:
        return ReleaseRules()

    def line_of(keys: tuple[str, ...]) -> int | None:
        # ("release", "model", "mode") -> the line of the deepest key that exists.
        node: Node | None = top.node
        line: int | None = None
        for key in keys:
            if node is None or node.kind != "mapping":
                break
            line = node.key_lines.get(key, node.line)
            node = node.value.get(key)
        return line

    return ReleaseRules.from_dict(child.plain(), path=top.where, line_of=line_of)


def _read_phi(top: _Reader) -> dict[str, bool]:
    phi = dict(PHI_PATTERN_DEFAULTS)
    reader = top.section_reader("phi_patterns", tuple(PHI_PATTERN_DEFAULTS))
    if reader is None:
        return phi
    for key in PHI_PATTERN_DEFAULTS:
        phi[key] = reader.boolean(key, PHI_PATTERN_DEFAULTS[key])
    return phi


def _int(value: int | None) -> int:
    assert value is not None
    return value
