"""Typed constructors and the schema of ledger entries.

Every entry is a JSON object written as RFC 8785 bytes with `"v": 1`, `"kind"`, `"session"`,
`"ts"` (RFC 3339 UTC) and `"seq"` (its position in the log, filled in by `Ledger.append`). Code
and output content never appear in an entry, only as a commitment; the constructors that commit
return the entry together with its opening, which `Ledger.append(entry, opening=...)` stores in
the private openings file.

Use these functions instead of writing dicts by hand: they are the schema, and `check_entry` (used
by both `Ledger.append` and the reviewer's `verify`) enforces the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bedside.errors import LedgerIntegrityError

from .commitment import (
    DOMAIN_ARTIFACT,
    DOMAIN_CODE,
    DOMAIN_OUTPUT,
    canonical_json,
    commit,
)

VERSION = 1

HEADER = "header"
EXECUTE_REQUEST = "execute_request"
OUTPUT = "output"
RELEASE = "release"
CHECKPOINT = "checkpoint"
ANCHOR = "anchor"
SEAL = "seal"
METERING = "metering"
INTERRUPTED = "interrupted"

#: Which entry field holds a commitment, and in which domain, per committing kind.
COMMITTED_FIELD: dict[str, tuple[str, str]] = {
    EXECUTE_REQUEST: ("code", DOMAIN_CODE),
    OUTPUT: ("content", DOMAIN_OUTPUT),
    RELEASE: ("artifact", DOMAIN_ARTIFACT),
}

_STR = (str,)
_INT = (int,)
_OPT_STR = (str, type(None))

# kind -> {field: allowed types}; every listed field is required.
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    HEADER: {
        "origin": _STR,
        "intent": (dict,),
        "policy": (dict,),
        "kernel_env": _STR,
        "identities": (dict,),
    },
    EXECUTE_REQUEST: {"msg_id": _STR, "code": _STR, "researcher_sig": _OPT_STR},
    OUTPUT: {
        "msg_id": _STR,
        "parent": _STR,
        "channel": _STR,
        "msg_type": _STR,
        "content": _STR,
        "decision": _STR,
        "rule": _STR,
        "layer": _STR,
        "bytes": _INT,
    },
    RELEASE: {
        "artifact": _STR,
        "name": _STR,
        "digest": _STR,
        "decision": _STR,
        "producers": (list,),
    },
    CHECKPOINT: {"note": _STR, "size": _INT, "proof": (list,)},
    ANCHOR: {
        "checkpoint_index": _INT,
        "checkpoint_hash": _STR,
        "chain_id": _INT,
        "contract": _STR,
        "tx": _STR,
        "block": _INT,
        "submitter": _STR,
        "root": _STR,
        "size": _INT,
    },
    SEAL: {"reason": _STR},
    METERING: {"counters": (dict,)},
    INTERRUPTED: {"reason": _STR},
}
KINDS = tuple(_SCHEMA)
#: What may follow the seal: the final signed checkpoint (covering the seal) and its anchors.
AFTER_SEAL = (CHECKPOINT, ANCHOR)
_COMMON: dict[str, tuple[type, ...]] = {
    "v": _INT,
    "kind": _STR,
    "session": _STR,
    "ts": _STR,
    "seq": _INT,
}
DECISIONS = ("released", "redacted", "blocked")


# The formatted second of the last timestamp (`now`): the sentry takes two timestamps per
# message, and formatting a datetime costs more than the rest of `now` together.
_second: tuple[int, str] = (-1, "")


def now() -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. 2026-11-29T16:05:00.123456Z."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{us:06d}Z"


# One flat (field, types) tuple per kind, common fields first: a single loop per entry.
_CHECKS = {kind: (*_COMMON.items(), *fields.items()) for kind, fields in _SCHEMA.items()}


def check_entry(entry: Mapping[str, Any], index: int | None = None) -> None:
    """Raise LedgerIntegrityError naming `index` unless `entry` matches the v1 schema."""
    if not isinstance(entry, Mapping):
        raise LedgerIntegrityError("entry is not a JSON object", index=index)
    kind = entry.get("kind")
    checks = _CHECKS.get(kind) if type(kind) is str else None
    if checks is None:
        if type(kind) is not str:
            raise LedgerIntegrityError("entry field 'kind' is missing or mistyped", index=index)
        raise LedgerIntegrityError(f"unknown entry kind {kind!r}", index=index)
    get = entry.get
    for name, types in checks:
        if type(get(name)) not in types or (types is _OPT_STR and name not in entry):
            what = "entry" if name in _COMMON else f"{kind} entry"
            raise LedgerIntegrityError(f"{what} field {name!r} is missing or mistyped", index=index)
    if entry["v"] != VERSION:
        raise LedgerIntegrityError(f"entry version {entry['v']} is not {VERSION}", index=index)
    if kind == OUTPUT and entry["decision"] not in DECISIONS:
        raise LedgerIntegrityError(
            f"output decision {entry['decision']!r} is not one of {DECISIONS}", index=index
        )
    if kind == OUTPUT and "kernel_decision" in entry:
        _check_kernel_claim(entry, index)
    if kind == ANCHOR and ("batch_index" in entry or "batch_size" in entry or "proof" in entry):
        _check_batch_anchor(entry, index)


def _check_kernel_claim(entry: Mapping[str, Any], index: int | None) -> None:
    """An output's recorded kernel claim: both decisions valid, the recorded one the stricter."""
    for name in ("kernel_decision", "sentry_decision"):
        if entry.get(name) not in DECISIONS:
            raise LedgerIntegrityError(
                f"output field {name!r} is {entry.get(name)!r}, not one of {DECISIONS}",
                index=index,
            )
    if type(entry.get("kernel_rule")) is not str:
        raise LedgerIntegrityError("output field 'kernel_rule' is missing or mistyped", index=index)
    stricter = max(entry["kernel_decision"], entry["sentry_decision"], key=DECISIONS.index)
    if entry["decision"] != stricter:
        raise LedgerIntegrityError(
            f"output decision {entry['decision']!r} is not the stricter of the sentry's "
            f"{entry['sentry_decision']!r} and the kernel's {entry['kernel_decision']!r}",
            index=index,
        )


def _check_batch_anchor(entry: Mapping[str, Any], index: int | None) -> None:
    """A batched anchor's extra fields come together and typed (see `anchor`)."""
    for name, types in (("batch_index", _INT), ("batch_size", _INT), ("proof", (list,))):
        if type(entry.get(name)) not in types:
            raise LedgerIntegrityError(
                f"anchor entry field {name!r} is missing or mistyped (a batched anchor has "
                "batch_index, batch_size and proof)",
                index=index,
            )
    if not all(type(p) is str for p in entry["proof"]):
        raise LedgerIntegrityError(
            "anchor entry field 'proof' must be a list of hex strings", index=index
        )


def _base(kind: str, session: str, ts: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"v": VERSION, "kind": kind, "session": session, "ts": ts or now()}
    entry.update(fields)
    return entry


def _opening(field: str, domain: str, salt: bytes, content: bytes) -> dict[str, Any]:
    return {
        "field": field,
        "domain": domain,
        "salt": base64.b64encode(salt).decode(),
        "content": base64.b64encode(content).decode(),
    }


def _value(x: Any) -> Any:
    """Enum members (Action, Layer) become their values."""
    return getattr(x, "value", x)


def header(
    *,
    session: str,
    origin: str,
    intent: Mapping[str, Any],
    policy_id: str,
    policy_digest: str,
    kernel_env: str,
    identities: Mapping[str, str],
    grant: Mapping[str, Any] | None = None,
    ts: str | None = None,
) -> dict[str, Any]:
    """The session header, entry 0: what was promised, under which policy, by whom.

    `identities` maps a role ("custodian", "researcher") to its C2SP verifier key. `intent` is
    the researcher's intent exactly as signed (its `researcher_sig` covers the rest of it), so
    the hospital's own additions (whether an intent was declared, the budget it granted, the
    sandbox) go in `grant`, never into `intent`.
    """
    fields: dict[str, Any] = {
        "origin": origin,
        "intent": dict(intent),
        "policy": {"id": policy_id, "digest": policy_digest},
        "kernel_env": kernel_env,
        "identities": dict(identities),
    }
    if grant is not None:
        fields["grant"] = dict(grant)
    return _base(HEADER, session, ts, fields)


def execute_request(
    *,
    session: str,
    msg_id: str,
    code: str | bytes,
    researcher_sig: str | None,
    cell_id: str | None = None,
    ts: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An execute request: the code as a commitment. Returns (entry, opening)."""
    raw = code.encode("utf-8") if isinstance(code, str) else code
    commitment, salt = commit(DOMAIN_CODE, raw)
    fields: dict[str, Any] = {
        "msg_id": msg_id,
        "code": commitment,
        "researcher_sig": researcher_sig,
    }
    if cell_id is not None:
        fields["cell_id"] = cell_id
    return _base(EXECUTE_REQUEST, session, ts, fields), _opening("code", DOMAIN_CODE, salt, raw)


#: Control replies that carry bulk bytes another file already holds: their committed form names
#: those bytes by SHA-256 instead of holding them, so an opening never duplicates them (a release
#: artifact lives once in releases/; an output fetched for a gap has its own entry's opening).
FETCH_REPLY = "bedside_release_fetch_reply"
ENTRIES_REPLY = "bedside_entries_reply"


def _bulk(text: Any) -> Any:
    """`{"sha256", "bytes"}` of a base64 string's decoded bytes (as-is when it is not one)."""
    if not isinstance(text, str):
        return text
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return text
    return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


def committed_content(msg_type: str, content: Mapping[str, Any]) -> Mapping[str, Any]:
    """`content` as an output entry commits to it: bulk base64 fields of a release fetch reply
    (`data`) and of an entries reply (each item's `content`) become `{"sha256", "bytes"}`."""
    if msg_type == FETCH_REPLY and "data" in content:
        return {**content, "data": _bulk(content["data"])}
    if msg_type == ENTRIES_REPLY and isinstance(content.get("entries"), list):
        items = [
            {**item, "content": _bulk(item["content"])}
            if isinstance(item, dict) and "content" in item
            else item
            for item in content["entries"]
        ]
        return {**content, "entries": items}
    return content


def output_committed_bytes(
    *, channel: str, msg_type: str, content: Mapping[str, Any], buffers: Sequence[bytes] = ()
) -> bytes:
    """The committed bytes of an output message (docs/dev/contracts.md)."""
    if msg_type in (FETCH_REPLY, ENTRIES_REPLY):
        content = committed_content(msg_type, content)
    return canonical_json(
        {
            "channel": channel,
            "msg_type": msg_type,
            "content": content,
            "buffers": [hashlib.sha256(bytes(b)).hexdigest() for b in buffers],
        }
    )


def output(
    *,
    session: str,
    msg_id: str,
    parent: str,
    channel: str,
    msg_type: str,
    content: Mapping[str, Any],
    buffers: Sequence[bytes] = (),
    decision: Any,
    rule: str,
    layer: Any,
    ts: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An output message as it leaves the sentry (released, redacted or blocked).

    `decision` is a `bedside.policy.decision.Action` or its value; `content` is the message's
    content after any redaction. Returns (entry, opening); the opening of a blocked output stays
    in the hospital's openings file (see `publishable_openings`).
    """
    raw = output_committed_bytes(
        channel=channel, msg_type=msg_type, content=content, buffers=buffers
    )
    return output_from_bytes(
        session=session,
        msg_id=msg_id,
        parent=parent,
        channel=channel,
        msg_type=msg_type,
        committed=raw,
        decision=decision,
        rule=rule,
        layer=layer,
        ts=ts,
    )


def output_from_bytes(
    *,
    session: str,
    msg_id: str,
    parent: str,
    channel: str,
    msg_type: str,
    committed: bytes,
    decision: Any,
    rule: str,
    layer: Any,
    ts: str | None = None,
    kernel: tuple[str, str] | None = None,
    sentry: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Like `output` when the caller already holds the committed bytes.

    `kernel` is the in-kernel guard's (untrusted) claim about the message as (decision, rule),
    and `sentry` the sentry's own decision; both are recorded only when the kernel made a claim
    (docs/ledger-format.md, "the kernel's claim").
    """
    entry, salt = output_with_salt(
        session=session,
        msg_id=msg_id,
        parent=parent,
        channel=channel,
        msg_type=msg_type,
        committed=committed,
        decision=decision,
        rule=rule,
        layer=layer,
        ts=ts,
        kernel=kernel,
        sentry=sentry,
    )
    return entry, _opening("content", DOMAIN_OUTPUT, salt, committed)


def output_with_salt(
    *,
    session: str,
    msg_id: str,
    parent: str,
    channel: str,
    msg_type: str,
    committed: bytes,
    decision: Any,
    rule: str,
    layer: Any,
    ts: str | None = None,
    kernel: tuple[str, str] | None = None,
    sentry: str | None = None,
    committed_as: tuple[str, bytes] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """`output_from_bytes` with the raw salt in place of the opening as a dict.

    The writer builds the opening from the salt and the bytes it already holds (the sentry
    passes an `openings.Opening` to `Ledger.append`): a megabyte output is then not turned
    into a base64 text and escaped as JSON on its way to the openings file. `committed_as` is
    `commit(DOMAIN_OUTPUT, committed)` when the caller computed it already (commitment, salt).
    """
    commitment, salt = committed_as or commit(DOMAIN_OUTPUT, committed)
    extra: dict[str, Any] = {}
    if kernel is not None:
        extra = {
            "kernel_decision": str(kernel[0]),
            "kernel_rule": str(kernel[1]),
            "sentry_decision": str(_value(sentry if sentry is not None else decision)),
        }
    entry = _base(
        OUTPUT,
        session,
        ts,
        {
            "msg_id": msg_id,
            "parent": parent,
            "channel": channel,
            "msg_type": msg_type,
            "content": commitment,
            "decision": str(_value(decision)),
            "rule": rule,
            "layer": str(_value(layer)),
            "bytes": len(committed),
            **extra,
        },
    )
    return entry, salt


def release(
    *,
    session: str,
    name: str,
    artifact: bytes,
    decision: Any,
    producers: Sequence[int],
    media_type: str | None = None,
    attestation_digest: str | None = None,
    approver: str | None = None,
    rule: str | None = None,
    ts: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A released (or refused) artifact: its digest, a commitment, the entries that produced it.

    `attestation_digest` is "sha256:<hex>" of the DSSE envelope, when one was issued. The
    opening holds the artifact bytes; pass `artifact=b""` and record only the digest when the
    artifact is too large to keep beside the ledger.
    """
    commitment, salt = commit(DOMAIN_ARTIFACT, artifact)
    fields: dict[str, Any] = {
        "artifact": commitment,
        "name": name,
        "digest": "sha256:" + hashlib.sha256(artifact).hexdigest(),
        "decision": str(_value(decision)),
        "producers": [int(p) for p in producers],
    }
    for key, value in (
        ("media_type", media_type),
        ("attestation", attestation_digest),
        ("approver", approver),
        ("rule", rule),
    ):
        if value is not None:
            fields[key] = value
    return _base(RELEASE, session, ts, fields), _opening(
        "artifact", DOMAIN_ARTIFACT, salt, artifact
    )


def checkpoint(
    *, session: str, note: str, size: int, proof: Sequence[bytes] = (), ts: str | None = None
) -> dict[str, Any]:
    """A signed tree head for the first `size` entries.

    `proof` is the consistency proof from `size` to the checkpoint entry's own position (empty
    when the note covers every entry before it); `Ledger.append_checkpoint` fills it in.
    """
    return _base(
        CHECKPOINT,
        session,
        ts,
        {"note": note, "size": size, "proof": [base64.b64encode(p).decode() for p in proof]},
    )


def anchor(
    *,
    session: str,
    checkpoint_index: int,
    checkpoint_hash: str,
    chain_id: int,
    contract: str,
    tx: str,
    block: int,
    submitter: str,
    root: str,
    size: int,
    batch_index: int | None = None,
    batch_size: int | None = None,
    proof: Sequence[str] = (),
    ts: str | None = None,
) -> dict[str, Any]:
    """Where the checkpoint at `checkpoint_index` was anchored on an EVM chain.

    The one definition of the anchor entry (`AnchorReceipt.to_entry` builds it here, and
    `bedside.ledger.anchor.verify_anchor_entry` checks it): `checkpoint_hash` is hex SHA-256 of
    the signed checkpoint note; `root` the anchored bytes32 as 0x-hex and `size` the uint64 of the
    `Anchored` event (the note's tree size, or the number of notes in a batch). A batched anchor
    also records `batch_index`, `batch_size` and `proof`, the RFC 6962 audit path (hex) of the
    checkpoint hash in the batch tree.
    """
    fields: dict[str, Any] = {
        "checkpoint_index": checkpoint_index,
        "checkpoint_hash": checkpoint_hash,
        "chain_id": chain_id,
        "contract": contract,
        "tx": tx,
        "block": block,
        "submitter": submitter,
        "root": root,
        "size": size,
    }
    if (batch_index is None) != (batch_size is None):
        raise ValueError("a batched anchor needs both batch_index and batch_size")
    if batch_index is not None:
        fields["batch_index"] = batch_index
        fields["batch_size"] = batch_size
        fields["proof"] = [str(p) for p in proof]
    elif proof:
        raise ValueError("only a batched anchor carries an inclusion proof")
    return _base(ANCHOR, session, ts, fields)


def seal(*, session: str, reason: str = "session ended", ts: str | None = None) -> dict[str, Any]:
    """The last entry of a session; the ledger refuses appends after it."""
    return _base(SEAL, session, ts, {"reason": reason})


def metering(
    *, session: str, counters: Mapping[str, int | str], ts: str | None = None
) -> dict[str, Any]:
    """Resource use so far (cells, cpu_ms, egress_bytes, …) as integer or string counters."""
    return _base(METERING, session, ts, {"counters": dict(counters)})


def interrupted(
    *, session: str, reason: str, msg_id: str | None = None, ts: str | None = None
) -> dict[str, Any]:
    """The kernel was interrupted, restarted or died; `msg_id` names the request it cut short."""
    fields: dict[str, Any] = {"reason": reason}
    if msg_id is not None:
        fields["msg_id"] = msg_id
    return _base(INTERRUPTED, session, ts, fields)
