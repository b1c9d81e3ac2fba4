"""Release requests as the researcher follows them: listed from the hospital, fetched into the
workspace and verified there on arrival.

The hospital's airlock answers two control messages on the session's shell channel
(docs/dev/contracts.md): `bedside_release_status_request` lists the session's requests with their
review state, `bedside_release_fetch_request` hands over an approved artifact (in pieces of at
most 4 MiB) with its DSSE attestation. Both replies carry receipts like every message the sentry
lets out, so each one is an `output` entry in both copies of the ledger: a fetch is on the record.

A fetched release lands in `<server root>/releases/<name>/`:

    <artifact>                  the bytes, as attested
    <artifact>.intoto.json      the DSSE envelope (in-toto Statement v1, custodian-signed)
    session.ledger              the researcher's own copy of the ledger, receipts-built (its
    session.openings            openings stay private: this one is empty)
    verification.json           what was checked, against which key, and the fetch's entries

It is verified with `bedside.ledger.attestation.verify_release`, the function behind
`bedside release verify`, against the custodian key this server trusts and the ledger copy it
built from receipts, before it is moved into place. A release that fails writes nothing there.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from bedside.errors import Error, ReleaseError
from bedside.ledger import Ledger
from bedside.ledger.attestation import read_envelope, verify_release

from .mirror import SessionMirror, ask_delay

RELEASES_DIR = "releases"
ATTESTATION_SUFFIX = ".intoto.json"  # as the airlock names it beside a delivered artifact
VERIFICATION = "verification.json"
RECORDS = "releases.json"  # in the session directory: what this server fetched, and how it went
#: How long to wait for the hospital to answer one control request.
REPLY_TIMEOUT = 60.0
#: How long the ledger copy may take to reach the entries an attestation names.
CATCH_UP_TIMEOUT = 30.0
#: Bytes asked for per fetch request (the sentry sends at most 4 MiB per reply anyway).
CHUNK = 4 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")
_REQUEST_ID = re.compile(r"^r-[0-9]{14}-[0-9a-f]{6}$")


class HospitalUnavailable(Error):
    """The session has no live connection to the hospital, or the hospital did not answer."""


class ReleaseVerificationError(ReleaseError):
    """A fetched release failed verification; nothing usable was written."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- asking the hospital -------------------------------------------------------------------


async def ask(
    mirror: SessionMirror, msg_type: str, content: dict[str, Any], timeout: float = REPLY_TIMEOUT
) -> dict[str, Any]:
    """Send one control request on the session's connection; the reply, receipt verified."""
    if mirror.send is None:
        raise HospitalUnavailable(
            f"session {mirror.kernel_id} has no live connection to the hospital (open the "
            "notebook so that its kernel connects)"
        )
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()
    request = mirror.control_request(msg_type, content)

    def _answer(msg: dict[str, Any]) -> None:
        if not done.done():
            done.set_result(msg)

    mirror.expect_reply(request["header"]["msg_id"], _answer)
    try:
        mirror.send(request)
    except Exception as exc:  # noqa: BLE001 - a closed websocket raises several kinds
        raise HospitalUnavailable(f"cannot reach the hospital: {exc}") from exc
    try:
        reply = await asyncio.wait_for(done, timeout=timeout)
    except TimeoutError as exc:
        raise HospitalUnavailable(f"the hospital did not answer {msg_type} in time") from exc
    # The future's callback runs after `observe_reply` returned, so the mirror's verdict on
    # the reply's receipt is on the message by now.
    meta = (reply.get("metadata") or {}).get("bedside") or {}
    if meta.get("verified") is not True:
        raise ReleaseError(
            f"the hospital's receipt for the {msg_type.replace('_request', '_reply')} did not "
            f"verify ({meta.get('unverified_reason', 'no receipt')}); the reply was discarded"
        )
    return reply


def _reply_entry(reply: dict[str, Any]) -> int | None:
    """The ledger index of the `output` entry that records this reply (from its receipt)."""
    receipt = ((reply.get("metadata") or {}).get("bedside") or {}).get("receipt") or {}
    msg_id = (reply.get("header") or {}).get("msg_id")
    for item in receipt.get("entries") or []:
        entry = item.get("entry") or {}
        if entry.get("kind") == "output" and entry.get("msg_id") == msg_id:
            return int(item["index"])
    return None


# -- listing -------------------------------------------------------------------------------


def records(directory: Path) -> dict[str, dict[str, Any]]:
    """What this server fetched for a session (by request id): path, verification or failure."""
    try:
        data = json.loads((directory / RECORDS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(directory: Path, request_id: str, record: dict[str, Any]) -> None:
    data = records(directory)
    data[request_id] = record
    tmp = directory / (RECORDS + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(directory / RECORDS)


def describe(row: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """One request as the panel shows it: the hospital's row plus `state` and `label`.

    state: `pending` (waiting for custodians), `approved` (every approval given: ready to
    fetch), `delivered` (fetched and verified into releases/), `denied`, `refused` (a check
    failed), or `failed` (fetched, but verification failed: nothing was written).
    """
    out = dict(row)
    status = row.get("status")
    approvals = row.get("approvals") or []
    required = row.get("required")
    if status == "pending":
        state = "pending"
        label = (
            f"approved {len(approvals)} of {required}, waiting for review"
            if approvals
            else f"pending review (0 of {required} approvals)"
        )
    elif status == "delivered":
        state = "approved"
        label = (
            f"approved {len(approvals)} of {required}: ready to fetch"
            if required
            else "released automatically: ready to fetch"
        )
    elif status == "denied":
        state = "denied"
        label = f"denied: {row.get('denial') or 'no reason given'}"
    elif status == "refused":
        state = "refused"
        label = "refused by the checks: " + ", ".join(str(c) for c in row.get("refusals") or [])
    else:
        state, label = str(status), str(status)
    if record is not None and status == "delivered":
        if record.get("verified"):
            state = "delivered"
            label = f"delivered to {record.get('path')} (verified)"
        elif record.get("error"):
            state = "failed"
            label = f"fetched, but verification failed: {record['error']}"
    out["state"] = state
    out["label"] = label
    out["fetched"] = record
    return out


def offline(directory: Path) -> list[dict[str, Any]]:
    """A past session's requests as far as this server knows them: the ones it fetched."""
    out = []
    for request_id, record in sorted(records(directory).items()):
        verified = bool(record.get("verified"))
        out.append(
            {
                "id": request_id,
                "name": record.get("name"),
                "kind": record.get("kind"),
                "size": record.get("size"),
                "status": "delivered",
                "approvals": record.get("approvers") or [],
                "required": None,
                "refusals": [],
                "filename": record.get("artifact"),
                "digest": record.get("digest"),
                "state": "delivered" if verified else "failed",
                "label": f"delivered to {record.get('path')} (verified)"
                if verified
                else f"fetched, but verification failed: {record.get('error')}",
                "fetched": record,
            }
        )
    return out


async def list_releases(mirror: SessionMirror) -> list[dict[str, Any]]:
    reply = await ask(mirror, "bedside_release_status_request", {})
    content = reply.get("content") or {}
    if content.get("status") != "ok":
        raise ReleaseError(f"the hospital could not list releases: {content.get('evalue')}")
    mine = records(mirror.directory)
    return [
        describe(row, mine.get(str(row.get("id"))))
        for row in content.get("releases") or []
        if isinstance(row, dict)
    ]


# -- fetching ------------------------------------------------------------------------------


async def fetch(mirror: SessionMirror, request_id: str, workspace: Path) -> dict[str, Any]:
    """Fetch one approved release into `workspace/releases/<name>/` and verify it there.

    Raises ReleaseError (the hospital refused: not approved, denied, too large),
    ReleaseVerificationError (nothing was written; the reason is also recorded for the
    panel) or HospitalUnavailable.
    """
    if not _REQUEST_ID.match(request_id):
        raise ReleaseError(f"{request_id!r} is not a release request id (r-YYYYMMDDhhmmss-xxxxxx)")
    pieces: list[bytes] = []
    entries: list[int] = []
    first: dict[str, Any] = {}
    offset = 0
    while True:
        reply = await ask(
            mirror,
            "bedside_release_fetch_request",
            {"id": request_id, "offset": offset, "length": CHUNK},
        )
        content = reply.get("content") or {}
        if content.get("status") != "ok":
            raise ReleaseError(str(content.get("evalue") or content))
        index = _reply_entry(reply)
        if index is not None:
            entries.append(index)
        if not first:
            first = content
        elif (content.get("digest"), content.get("size")) != (first["digest"], first["size"]):
            raise ReleaseVerificationError(f"{request_id} changed at the hospital while fetched")
        try:
            piece = base64.b64decode(str(content.get("data", "")), validate=True)
        except ValueError as exc:
            raise ReleaseVerificationError(f"{request_id}: the artifact is not base64") from exc
        if content.get("offset", 0) != offset or (not piece and offset < int(first["size"])):
            raise ReleaseVerificationError(f"{request_id}: the hospital sent a wrong piece")
        pieces.append(piece)
        offset += len(piece)
        if offset >= int(first["size"]):
            break
    data = b"".join(pieces)
    try:
        return await _land(mirror, request_id, first, data, entries, workspace)
    except ReleaseVerificationError as exc:
        _record(
            mirror.directory,
            request_id,
            {"verified": False, "error": exc.diagnostics(), "at": _now(), "entries": entries},
        )
        raise


async def _land(
    mirror: SessionMirror,
    request_id: str,
    reply: dict[str, Any],
    data: bytes,
    entries: list[int],
    workspace: Path,
) -> dict[str, Any]:
    filename = str(reply.get("filename", ""))
    if not _NAME.match(filename) or filename in (".", ".."):
        raise ReleaseVerificationError(f"{request_id}: {filename!r} is not a plain file name")
    envelope = reply.get("attestation")
    if not isinstance(envelope, dict):
        raise ReleaseVerificationError(f"{request_id}: the reply carries no attestation")
    name = str(reply.get("name") or "")
    folder_name = name if _NAME.match(name) else request_id
    releases = workspace / RELEASES_DIR
    releases.mkdir(parents=True, exist_ok=True)
    staging = releases / f".incoming-{request_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        artifact = staging / filename
        artifact.write_bytes(data)
        attestation = staging / (filename + ATTESTATION_SUFFIX)
        attestation.write_text(json.dumps(envelope, indent=2), encoding="utf-8")
        try:
            _, stmt = read_envelope(attestation)
        except Error as exc:
            raise ReleaseVerificationError(exc.diagnostics()) from exc
        predicate = stmt.get("predicate") or {}
        if predicate.get("request") != request_id:
            raise ReleaseVerificationError(
                f"the attestation is about {predicate.get('request')!r}, not {request_id}"
            )
        attested = int((predicate.get("ledger") or {}).get("size") or 0)
        await _caught_up(mirror, max([attested, *(i + 1 for i in entries)]))
        ledger_copy = staging / "session.ledger"
        _copy_ledger(mirror, ledger_copy)
        custodian = mirror.custodian.vkey if mirror.custodian is not None else None
        if custodian is None:
            raise ReleaseVerificationError("this server trusts no custodian key yet")
        try:
            summary = await asyncio.to_thread(
                verify_release, artifact, attestation, ledger_copy, keys=[custodian]
            )
        except Error as exc:
            raise ReleaseVerificationError(
                f"{filename} failed verification: {exc.diagnostics()}"
            ) from exc
        if f"sha256:{summary['digest']}" != reply.get("digest"):
            raise ReleaseVerificationError(
                f"{filename}: the hospital named digest {reply.get('digest')}, the attestation "
                f"sha256:{summary['digest']}"
            )
        target = releases / folder_name
        if target.exists():
            previous = _read_json(target / VERIFICATION)
            if previous.get("request") != request_id:
                target = releases / f"{folder_name}-{request_id}"
        record = {
            "request": request_id,
            "name": name or None,
            "kind": reply.get("kind"),
            "artifact": filename,
            "attestation": attestation.name,
            "ledger": ledger_copy.name,
            "digest": reply.get("digest"),
            "size": len(data),
            "verified": True,
            "checked": ["digest", "custodian signature", "ledger inclusion", "release story"],
            "custodian": summary["key"],
            "approvers": summary["approvers"],
            "attested_size": summary["size"],
            "attested_entries": summary["entries"],
            "fetch_entries": entries,  # the `output` entries recording the fetch replies
            "session": mirror.session_id,
            "kernel_id": mirror.kernel_id,
            "at": _now(),
            "verify_command": (
                f"bedside release verify {filename} --attestation {attestation.name} "
                f"--ledger {ledger_copy.name} --key '{custodian}'"
            ),
        }
        (staging / VERIFICATION).write_text(json.dumps(record, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    path = f"{RELEASES_DIR}/{target.name}/"
    _record(mirror.directory, request_id, {**record, "path": path})
    return {**record, "path": path}


async def _caught_up(mirror: SessionMirror, size: int) -> None:
    """Wait until the ledger copy holds `size` entries (their receipts may still be on the way,
    or fetched for a gap)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_TIMEOUT
    asks = 0
    ask_at = loop.time() + ask_delay(asks)
    while mirror.ledger is None or mirror.ledger.size < size:
        now = loop.time()
        if now >= ask_at and mirror.ledger is not None:
            # Entries the hospital wrote after the last message we hold (the airlock's records
            # of the decisions) ride on the next receipt, which may be a while coming: ask.
            mirror.ask_entries(mirror.ledger.size, size)
            asks += 1
            ask_at = now + ask_delay(asks)
        if now > deadline:
            have = 0 if mirror.ledger is None else mirror.ledger.size
            raise ReleaseVerificationError(
                f"the attestation names ledger entries up to {size}, but our copy holds {have}: "
                "the release cannot be checked against it"
            )
        await asyncio.sleep(0.05)


def _copy_ledger(mirror: SessionMirror, out: Path) -> None:
    """The researcher's ledger as it stands, without its private openings."""
    src = mirror.ledger
    assert src is not None  # _caught_up waited for it
    src.flush()
    size = src.size
    dst = Ledger.create(out, session_id=src.session_id, origin=src.origin)
    try:
        for i in range(size):
            dst.append(src.entry(i))
        dst.flush()
        if dst.root() != src.root_at(size):
            raise ReleaseVerificationError("the copy of the ledger differs from the original")
    finally:
        dst.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
