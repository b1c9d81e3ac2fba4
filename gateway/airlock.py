"""The hospital airlock: release requests wait in an outbox until custodians let them out.

The sandboxed kernel leaves each request in `<state>/outbox/<id>/` (the artifact and
`request.json`, see `bedside.kernel.release`). The airlock runs on the trusted side (the sentry,
or a custodian's `bedside review` command): it repeats every check that can be made from the
artifact bytes alone, records each step (request, check results, approval, denial, delivery) as
a `release` entry in the session ledger, enforces the two-person rule, and delivers an approved
artifact to the researcher's `releases/` folder beside a DSSE envelope holding an in-toto
Statement v1 signed with the custodian key.

Layout of the state directory::

    <state>/airlock.json            ledger, workspace, policy, custodian key, requester
    <state>/outbox/<id>/request.json  written by the kernel, untrusted
    <state>/outbox/<id>/<artifact>    the bytes to release
    <state>/outbox/<id>/status.json   written by the airlock only
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

from bedside.errors import LedgerIntegrityError, ReleaseError
from bedside.ledger import attestation
from bedside.policy.release import KINDS, ReleaseRules

_ID = re.compile(r"^r-[0-9]{14}-[0-9a-f]{6}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")
SKLEARN_PREFIX = "sklearn."
_CHECK = re.compile(r"^[a-z][a-z_]{0,39}$")
_FORMATS = {"model": {"safetensors", "skops"}, "table": {"csv"}, "figure": {"png"}}
ATTESTATION_SUFFIX = ".intoto.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    """A person acting on a request: the name they gave and, when they sign, their key."""

    name: str
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **({"key": self.key} if self.key else {})}


@dataclass
class ReleaseRequest:
    """One request in the outbox as the airlock sees it."""

    id: str
    folder: Path
    request: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return str(self.status.get("status", "new"))

    @property
    def artifact(self) -> Path:
        return self.folder / self.request["filename"]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.request.get("name"),
            "kind": self.request.get("kind"),
            "size": self.request.get("size"),
            "status": self.state,
            "approvals": [a["name"] for a in self.status.get("approvals", [])],
            "required": self.status.get("approvals_required"),
            "refusals": [c["check"] for c in self.status.get("checks", []) if not c["passed"]],
        }


class Airlock:
    """The outbox of one session and the custodians' workflow over it."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        ledger: Any,
        signer: Any,
        workspace: str | Path,
        rules: ReleaseRules,
        policy_id: str = "",
        policy_digest: str = "",
        requester: Identity | None = None,
        n_records: int | None = None,
        find_identifier: Callable[[str], Any] | None = None,
        append: Callable[..., int] | None = None,
    ) -> None:
        """`ledger` is read (entries, proofs, checkpoints); `append` writes, and defaults to
        `ledger.append` — the sentry passes its own `HospitalLedger.append` so that release
        entries ride on its receipts to the researcher's copy of the ledger."""
        self.state_dir = Path(state_dir)
        self.outbox = self.state_dir / "outbox"
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger
        self.signer = signer
        self.workspace = Path(workspace)
        self.rules = rules
        self.policy_id = policy_id
        self.policy_digest = policy_digest
        self.requester = requester
        self.n_records = n_records
        self.find_identifier = find_identifier
        self._ledger_append = append

    # -- configuration ---------------------------------------------------------------------

    @staticmethod
    def configure(
        state_dir: str | Path,
        *,
        ledger: str | Path,
        key: str | Path,
        workspace: str | Path,
        policy: str | Path | None = None,
        requester: Identity | None = None,
        owner_pid: int | None = None,
    ) -> Path:
        """Write `<state>/airlock.json` (the sentry does this when a session starts).

        `owner_pid` names the live process that owns the ledger (the sentry): while it runs,
        `bedside review` queues signed decisions for it instead of appending itself."""
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        (state / "outbox").mkdir(exist_ok=True)
        conf = {
            "ledger": str(Path(ledger).resolve()),
            "key": str(Path(key).resolve()),
            "workspace": str(Path(workspace).resolve()),
            "policy": str(Path(policy).resolve()) if policy else None,
            "requester": requester.to_dict() if requester else None,
            "owner_pid": owner_pid,
        }
        path = state / "airlock.json"
        path.write_text(json.dumps(conf, indent=2))
        return path

    @classmethod
    def from_state(cls, state_dir: str | Path) -> Airlock:
        from bedside.ledger import Ledger, Signer

        state = Path(state_dir)
        try:
            conf = json.loads((state / "airlock.json").read_text())
        except FileNotFoundError:
            raise ReleaseError(
                f"{state}: no airlock.json; is this the sentry's state directory "
                "(`--state DIR` or BEDSIDE_STATE)?"
            ) from None
        rules, pid, pdigest, n_records, find = ReleaseRules(), "", "", None, None
        if conf.get("policy"):
            rules, pid, pdigest, n_records, find = _policy_bits(Path(conf["policy"]))
        req = conf.get("requester")
        return cls(
            state,
            ledger=Ledger.open(conf["ledger"]),
            signer=Signer.load(conf["key"]),
            workspace=conf["workspace"],
            rules=rules,
            policy_id=pid,
            policy_digest=pdigest,
            requester=Identity(req["name"], req.get("key")) if req else None,
            n_records=n_records,
            find_identifier=find,
        )

    # -- reading ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One custodian at a time: approvals and ledger appends must not interleave.
        with open(self.outbox / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load(self, folder: Path) -> ReleaseRequest:
        try:
            request = json.loads((folder / "request.json").read_text())
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"{folder}: unreadable request.json ({exc})") from exc
        status_path = folder / "status.json"
        status = json.loads(status_path.read_text()) if status_path.exists() else {}
        return ReleaseRequest(folder.name, folder, request, status)

    def _save(self, req: ReleaseRequest) -> None:
        tmp = req.folder / "status.json.tmp"
        tmp.write_text(json.dumps(req.status, indent=2, sort_keys=True))
        tmp.replace(req.folder / "status.json")

    def requests(self) -> list[ReleaseRequest]:
        """Every request, after ingesting the ones the kernel left since the last look."""
        self.ingest()
        return [
            self._load(f)
            for f in sorted(self.outbox.iterdir())
            if f.is_dir() and (f / "request.json").exists()
        ]

    def get(self, request_id: str) -> ReleaseRequest:
        if not _ID.match(request_id):
            raise ReleaseError(
                f"{request_id!r} is not a release request id (r-YYYYMMDDhhmmss-"
                "xxxxxx); `bedside review list` shows them"
            )
        self.ingest()
        folder = self.outbox / request_id
        if not (folder / "request.json").exists():
            raise ReleaseError(f"no release request {request_id} in {self.outbox}")
        return self._load(folder)

    # -- ingest: the trusted re-check --------------------------------------------------------

    def ingest(self) -> list[ReleaseRequest]:
        done = []
        with self._locked():
            for folder in sorted(self.outbox.iterdir()):
                if (
                    folder.is_dir()
                    and (folder / "request.json").exists()
                    and not (folder / "status.json").exists()
                ):
                    done.append(self._ingest_one(folder))
        return done

    def _ingest_one(self, folder: Path) -> ReleaseRequest:
        req = self._load(folder)
        r = req.request
        problems = _validate_request(folder.name, r)
        data = b""
        if not problems:
            try:
                data = req.artifact.read_bytes()
            except OSError:
                problems.append("the artifact file is missing")
        kind = r.get("kind") if r.get("kind") in KINDS else "model"
        rules = self.rules.for_kind(kind)
        digest = hashlib.sha256(data).hexdigest()
        cells = self._producers(_cells(r.get("producing_cells")))
        filename = r["filename"] if not problems else req.id
        request_entry = self._append(
            "request",
            "requested",
            req.id,
            data,
            filename,
            cells,
            {"artifact_kind": kind, "size": len(data)},
            keep_opening=True,
        )
        checks: list[dict[str, Any]] = []
        smuggled = 0
        for c in r.get("checks", []) if isinstance(r.get("checks"), list) else []:
            if isinstance(c, dict) and {"check", "passed", "evidence"} <= c.keys():
                name = str(c["check"])
                evidence, hit = self._clean(str(c["evidence"])[:500])
                smuggled += hit or not _CHECK.match(name)
                checks.append(
                    {
                        "check": name if _CHECK.match(name) else "unnamed",
                        "passed": bool(c["passed"]),
                        "evidence": evidence,
                        "by": "kernel",
                    }
                )
        if smuggled:
            # Text from the sandbox goes into the ledger, which leaves: it must not carry records.
            problems.append(
                f"{smuggled} check reports from the kernel hold identifier values "
                "or malformed names"
            )
        if problems:
            checks.append(
                {
                    "check": "request",
                    "passed": False,
                    "evidence": "; ".join(problems),
                    "by": "airlock",
                }
            )
        if not problems or smuggled and len(problems) == 1:
            for c in self.recheck(r, data, digest):
                evidence, _ = self._clean(c.evidence)
                checks.append(
                    {"check": c.name, "passed": c.passed, "evidence": evidence, "by": "airlock"}
                )
        passed = all(c["passed"] for c in checks)
        checks_entry = self._append(
            "checks",
            "checked" if passed else "refused",
            req.id,
            data,
            filename,
            cells,
            {"passed": passed, "checks": checks},
        )
        req.status = {
            "status": "pending" if passed else "refused",
            "digest": f"sha256:{digest}",
            "checks": checks,
            "approvals": [],
            "approvals_required": 0 if rules.mode == "auto" else rules.approvals_required,
            "mode": rules.mode,
            "entries": [request_entry, checks_entry],
            "ingested": _now(),
            "producers": cells,
        }
        self._save(req)
        if passed and rules.mode == "auto":
            self._deliver(req)
        return req

    def _clean(self, text: str) -> tuple[str, bool]:
        """Text bound for the ledger, withheld when it holds an identifier value or PHI.

        Returns (text, True) when an identifier value of the loaded datasets was found: from the
        kernel that is an attempt to smuggle records, and the request is refused."""
        from bedside.policy import scan_phi

        if self.find_identifier is not None and self.find_identifier(text) is not None:
            return "[withheld: the text holds an identifier value of the loaded datasets]", True
        if scan_phi(text):
            return "[withheld: the text matches a PHI pattern]", False
        return text, False

    def recheck(self, r: dict[str, Any], data: bytes, digest: str) -> list[Any]:
        """The checks that need only the bytes: digest, mode, size, format, records, identifiers.

        The kernel's own results (membership inference, leaf sizes with the training data at
        hand) are recorded as reported by the kernel; these are the ones it cannot fake.
        """
        from bedside.kernel._model_checks import CheckResult

        kind = r["kind"]
        rules = self.rules.for_kind(kind)
        out: list[CheckResult] = []
        claimed = str(r.get("digest", "")).removeprefix("sha256:")
        out.append(
            CheckResult(
                "digest",
                claimed == digest,
                "the artifact matches the digest the kernel reported"
                if claimed == digest
                else "the artifact's SHA-256 differs from the kernel's report",
            )
        )
        if rules.mode == "deny":
            out.append(
                CheckResult(
                    "mode",
                    False,
                    f"the policy denies every {kind} release (release.{kind}.mode: deny)",
                )
            )
        out.append(
            CheckResult(
                "max_bytes",
                len(data) <= rules.max_bytes,
                f"{len(data)} bytes, cap {rules.max_bytes} (release.{kind}.max_bytes)",
            )
        )
        fmt = r["format"]
        if fmt == "safetensors":
            out.extend(self._recheck_safetensors(data))
        elif fmt == "skops":
            out.extend(self._recheck_skops(data, rules.min_leaf_size))
        elif fmt == "csv" and self.find_identifier is not None:
            lines = data.decode("utf-8", "replace").splitlines()
            hits = sum(1 for line in lines if self.find_identifier(line) is not None)
            out.append(
                CheckResult(
                    "identifiers",
                    hits == 0,
                    f"{hits} lines hold identifier values of the loaded datasets"
                    if hits
                    else "no identifier values in the table",
                )
            )
        return out

    def _recheck_safetensors(self, data: bytes) -> list[Any]:
        from bedside.kernel._model_checks import CheckResult

        # The JSON header alone says every tensor's dtype and shape: no tensor is loaded and
        # nothing is executed.
        try:
            header_len = int.from_bytes(data[:8], "little")
            if not 2 <= header_len <= min(len(data) - 8, 100 * 2**20):
                raise ValueError("bad header length")
            header = json.loads(data[8 : 8 + header_len])
            meta = header.pop("__metadata__", None) or {}
            shapes = {k: list(v["shape"]) for k, v in header.items()}
            end = max((v["data_offsets"][1] for v in header.values()), default=0)
            if 8 + header_len + end != len(data):
                raise ValueError("tensor data does not fill the file")
        except (ValueError, KeyError, TypeError) as exc:
            return [CheckResult("format", False, f"not a readable safetensors file ({exc})")]
        out = [CheckResult("format", True, f"safetensors, {len(shapes)} tensors, no code")]
        n = self.n_records
        shaped = [(k, s) for k, s in shapes.items() if n and n > 1 and n in s]
        if shaped:
            name, shape = shaped[0]
            evidence = (
                f"tensor {name!r} has shape {shape}: a dimension equals the number of records "
                f"in the loaded datasets ({n})"
            )
        else:
            evidence = "no tensor has a dimension equal to the number of records"
        out.append(CheckResult("record_shaped", not shaped, evidence))
        if self.find_identifier is not None:
            strings = _json_strings(meta)
            hits = sum(1 for s in strings if self.find_identifier(s) is not None)
            out.append(
                CheckResult(
                    "vocabulary",
                    hits == 0,
                    f"the metadata holds {hits} identifier values of the loaded datasets"
                    if hits
                    else "no identifier values in the metadata",
                )
            )
        return out

    def _recheck_skops(self, data: bytes, min_leaf_size: int) -> list[Any]:
        import skops.io

        from bedside.kernel._model_checks import (
            CheckResult,
            TrainingData,
            check_leaf_sizes,
            check_sklearn_instances,
            check_vocabularies,
        )

        try:
            unknown = skops.io.get_untrusted_types(data=data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a refusal
            return [CheckResult("format", False, f"not a readable skops file ({exc})")]
        # skops' default set leaves out scikit-learn's own internals (tree structures, boosting
        # predictors, optimiser state); those are data, not code. Anything else is refused.
        foreign = sorted(t for t in unknown if not t.startswith(SKLEARN_PREFIX))
        if foreign:
            return [
                CheckResult(
                    "format",
                    False,
                    "the skops file names types outside "
                    f"scikit-learn and skops' trusted set: {', '.join(foreign[:5])}",
                )
            ]
        est = skops.io.loads(data, trusted=unknown)
        out = [CheckResult("format", True, "skops, only trusted types")]
        out.append(check_sklearn_instances(est, TrainingData(n_records=self.n_records)))
        leaf = check_leaf_sizes(est, min_leaf_size)
        if leaf is not None:
            out.append(leaf)
        if self.find_identifier is not None:
            out.append(check_vocabularies(est, self.find_identifier))
        return out

    # -- the custodians' decisions -----------------------------------------------------------

    def approve(
        self,
        request_id: str,
        approver: Identity,
        approver_signer: Any = None,
    ) -> ReleaseRequest:
        """Record one custodian's approval; deliver once `approvals_required` distinct ones."""
        return self._decide(request_id, "approve", approver, approver_signer, None, "")

    def deny(
        self, request_id: str, approver: Identity, reason: str, approver_signer: Any = None
    ) -> ReleaseRequest:
        return self._decide(request_id, "deny", approver, approver_signer, None, reason)

    def _decide(
        self,
        request_id: str,
        decision: str,
        approver: Identity,
        signer: Any,
        sig: str | None,
        reason: str,
    ) -> ReleaseRequest:
        if decision == "deny" and not reason.strip():
            raise ReleaseError("a denial needs --reason: the researcher reads it")
        req = self.get(request_id)
        with self._locked():
            req = self._load(req.folder)
            self._must_be_pending(req)
            approver = Identity(
                approver.name, signer.verifier_key if signer is not None else approver.key
            )
            if sig is None and signer is not None:
                sig = base64.b64encode(
                    signer.sign(decision_message(req.id, req.status["digest"], decision))
                ).decode()
            signed = {"sig": sig} if sig else {}
            if decision == "deny":
                idx = self._append(
                    "denial",
                    "denied",
                    req.id,
                    req.artifact.read_bytes(),
                    req.request["filename"],
                    req.status.get("producers", []),
                    {**approver.to_dict(), "reason": reason[:500], **signed},
                    approver=approver.name,
                )
                req.status.update(
                    status="denied",
                    denial={**approver.to_dict(), "reason": reason, "entry": idx, "ts": _now()},
                )
                req.status["entries"].append(idx)
                self._save(req)
                return req
            if self.requester is not None and (
                approver.name == self.requester.name
                or (approver.key is not None and approver.key == self.requester.key)
            ):
                raise ReleaseError(
                    f"two_person_rule: {approver.name} requested {req.id} and cannot approve "
                    "it; another custodian must"
                )
            for a in req.status["approvals"]:
                if a["name"] == approver.name or (approver.key and a.get("key") == approver.key):
                    raise ReleaseError(
                        f"two_person_rule: {approver.name} already approved {req.id}; "
                        f"{req.status['approvals_required']} distinct custodians must approve"
                    )
            idx = self._append(
                "approval",
                "approved",
                req.id,
                req.artifact.read_bytes(),
                req.request["filename"],
                req.status.get("producers", []),
                {**approver.to_dict(), **signed},
                approver=approver.name,
            )
            req.status["approvals"].append({**approver.to_dict(), "entry": idx, "ts": _now()})
            req.status["entries"].append(idx)
            self._save(req)
            if len(req.status["approvals"]) >= req.status["approvals_required"]:
                self._deliver(req)
        return req

    # -- a live session: the sentry owns the ledger, custodians queue signed decisions ------

    @staticmethod
    def queue_decision(
        state_dir: str | Path,
        request_id: str,
        decision: str,
        who: Identity,
        signer: Any,
        reason: str = "",
    ) -> Path:
        """Leave a signed decision for the airlock's owner (the sentry) to apply.

        While a session is live only the sentry writes its ledger (its receipts carry every new
        entry to the researcher's copy), so `bedside review` queues instead of appending.
        """
        if signer is None:
            raise ReleaseError("during a live session decisions must be signed: pass --key")
        if decision == "deny" and not reason.strip():
            raise ReleaseError("a denial needs --reason: the researcher reads it")
        req = read_request(Path(state_dir), request_id)
        if "digest" not in req.status:
            raise ReleaseError(
                f"{request_id} has not been checked by the airlock yet; try again in a moment"
            )
        msg = decision_message(req.id, req.status["digest"], decision)
        body = {
            "decision": decision,
            "name": who.name,
            "key": signer.verifier_key,
            "reason": reason,
            "sig": base64.b64encode(signer.sign(msg)).decode(),
            "ts": _now(),
        }
        folder = req.folder / "decisions"
        folder.mkdir(exist_ok=True)
        tag = hashlib.sha256(msg + who.name.encode()).hexdigest()[:8]
        path = folder / f"{datetime.now(UTC):%Y%m%d%H%M%S%f}-{tag}.json"
        # Written whole, then renamed: the sentry's poll must never read a half-written file
        # (it would reject the decision for good).
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)
        return path

    def poll(self) -> list[str]:
        """Ingest new requests and apply queued decisions; the sentry calls this in its loop.

        Returns one line per decision applied or rejected (the rejection is also written next
        to the decision, for `bedside review show`)."""
        from bedside.ledger import Verifier

        self.ingest()
        log: list[str] = []
        for folder in sorted(self.outbox.iterdir()):
            queued = folder / "decisions"
            if not queued.is_dir():
                continue
            for path in sorted(queued.glob("*.json")):
                try:
                    d = json.loads(path.read_text())
                    req = self._load(folder)
                    Verifier(d["key"]).verify(
                        decision_message(req.id, req.status.get("digest", ""), d["decision"]),
                        base64.b64decode(d["sig"]),
                    )
                    self._decide(
                        req.id,
                        d["decision"],
                        Identity(d["name"], d["key"]),
                        None,
                        d["sig"],
                        d.get("reason", ""),
                    )
                    outcome = "applied"
                except (ReleaseError, LedgerIntegrityError, KeyError, ValueError) as exc:
                    outcome = f"rejected: {exc}"
                path.rename(path.with_suffix(".done"))
                path.with_suffix(".outcome").write_text(outcome)
                log.append(f"{folder.name} {path.stem}: {outcome}")
        return log

    def _must_be_pending(self, req: ReleaseRequest) -> None:
        if req.state != "pending":
            refusals = ", ".join(
                c["check"] for c in req.status.get("checks", []) if not c["passed"]
            )
            extra = f" (refused by: {refusals})" if refusals else ""
            raise ReleaseError(
                f"{req.id} is {req.state}{extra}; only pending requests can be approved or denied"
            )

    # -- delivery ----------------------------------------------------------------------------

    def _deliver(self, req: ReleaseRequest) -> None:
        digest = req.status["digest"]
        approvers = [a["name"] for a in req.status["approvals"]]
        data = req.artifact.read_bytes()
        idx = self._append(
            "delivery",
            "released",
            req.id,
            data,
            req.request["filename"],
            req.status.get("producers", []),
            {"approvers": approvers},
            keep_opening=True,
        )
        req.status["entries"].append(idx)
        evidence = attestation.ledger_evidence(self.ledger, req.status["entries"])
        evidence["origin"] = getattr(self.ledger, "origin", None)
        evidence["session"] = self.ledger.session_id
        try:
            evidence["checkpoint"] = self.ledger.sign_checkpoint(self.signer)
        except Exception:  # noqa: BLE001 - the root and proofs above stand on their own
            evidence["checkpoint"] = None
        predicate = {
            "request": req.id,
            "kind": req.request["kind"],
            "format": req.request["format"],
            "policy": {"id": self.policy_id, "digest": self.policy_digest},
            "requester": self.requester.to_dict() if self.requester else None,
            "approvers": [
                {k: a[k] for k in ("name", "key", "entry") if k in a}
                for a in req.status["approvals"]
            ],
            "mode": req.status["mode"],
            "checks": [{k: c[k] for k in ("check", "passed", "by")} for c in req.status["checks"]],
            "producers": req.status.get("producers", []),
            "custodian": self.signer.verifier_key,
            "ledger": evidence,
        }
        stmt = attestation.statement(
            subject_name=req.request["filename"],
            digest_hex=digest.removeprefix("sha256:"),
            predicate=predicate,
        )
        envelope = attestation.sign_statement(stmt, self.signer)
        out = self.workspace / "releases"
        out.mkdir(parents=True, exist_ok=True)
        target = out / req.request["filename"]
        target.write_bytes(data)
        att = out / (req.request["filename"] + ATTESTATION_SUFFIX)
        att.write_text(json.dumps(envelope, indent=2))
        req.status.update(
            status="delivered",
            delivered={
                "artifact": str(target),
                "attestation": str(att),
                "entry": idx,
                "ts": _now(),
            },
        )
        self._save(req)

    # -- ledger ------------------------------------------------------------------------------

    def _producers(self, cells: list[Any]) -> list[int]:
        """Ledger indexes of the execute requests behind an artifact.

        The kernel names the message ids of the cells it ran (or, outside a sentry session,
        plain entry indexes); the ledger's execute_request entries carry the same ids.
        """
        wanted = {c for c in cells if isinstance(c, str) and c}
        out = sorted({c for c in cells if isinstance(c, int) and 0 <= c < self.ledger.size})
        if wanted:
            for i in range(self.ledger.size):
                e = self.ledger.entry(i)
                if e.get("kind") == "execute_request" and e.get("msg_id") in wanted:
                    out.append(i)
        return sorted(set(out))

    def _append(
        self,
        step: str,
        decision: str,
        request_id: str,
        data: bytes,
        name: str,
        cells: list[Any],
        extra: dict[str, Any],
        *,
        approver: str | None = None,
        keep_opening: bool = False,
    ) -> int:
        """One `release` entry. Decisions other than "released" keep their opening in the
        hospital (`publishable_openings` drops them); only the request and the delivery keep
        one at all, so a large model is not copied into the openings file at every step."""
        from bedside.ledger import entries

        producers = [c for c in cells if isinstance(c, int)]
        entry, opening = entries.release(
            session=self.ledger.session_id,
            name=name,
            artifact=data,
            decision=decision,
            producers=producers,
            approver=approver,
            rule=step,
        )
        entry.update({"step": step, "request": request_id, **extra})
        if getattr(self.ledger, "sealed", False):
            # A sealed session is final: its root is what the researcher cosigned and may have
            # anchored, so no decision can be added behind it.
            raise ReleaseError(
                f"{request_id}: session {self.ledger.session_id} is sealed, so no {step} can be "
                "recorded in its ledger any more; decisions must be made while the session is "
                "live. Fix: run the notebook again with `bedside run --wait-releases SECONDS` "
                "(it keeps the session open until custodians decide), or request the release "
                "again in a new session"
            )
        append = self._ledger_append or self.ledger.append
        return int(append(entry, opening=opening if keep_opening else None, sync=True))


def decision_message(request_id: str, digest: str, decision: str) -> bytes:
    """What a custodian signs: this decision on this request about these exact bytes."""
    return rfc8785.dumps({"request": request_id, "digest": digest, "decision": decision})


def read_request(state_dir: Path, request_id: str) -> ReleaseRequest:
    """One request as it stands, without ingesting or touching the ledger (for a live session)."""
    if not _ID.match(request_id):
        raise ReleaseError(
            f"{request_id!r} is not a release request id (r-YYYYMMDDhhmmss-"
            "xxxxxx); `bedside review list` shows them"
        )
    folder = state_dir / "outbox" / request_id
    try:
        request = json.loads((folder / "request.json").read_text())
    except (OSError, ValueError):
        raise ReleaseError(f"no release request {request_id} in {state_dir / 'outbox'}") from None
    status_path = folder / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    return ReleaseRequest(request_id, folder, request, status)


#: The most artifact bytes one `bedside_release_fetch_reply` carries. The reply travels as one
#: websocket message from Enterprise Gateway to the researcher's jupyter_server, whose gateway
#: client refuses messages over 10 MiB (tornado's default) and drops the kernel connection:
#: 4 MiB of raw bytes is 5.6 MB in base64, well under it. Larger artifacts come in pieces.
FETCH_CHUNK = 4 * 1024 * 1024


def fetch_delivered(
    state_dir: Path, request_id: str, *, max_bytes: int, offset: int = 0, length: int | None = None
) -> dict[str, Any]:
    """The `bedside_release_fetch_reply` content for one delivered release, or ReleaseError.

    `offset`/`length` select a piece of the artifact (at most FETCH_CHUNK bytes per reply); the
    reply's `size` is the whole artifact's, so a client knows whether more pieces follow. The
    attestation rides on every piece: it is small, and each piece is then self-describing.
    The delivered bytes are checked against the digest the airlock recorded on the first piece
    (the researcher checks the whole against the signed attestation in any case).
    """
    req = read_request(state_dir, request_id)
    delivered = req.status.get("delivered")
    if req.state != "delivered" or not isinstance(delivered, dict):
        why = ""
        if req.state == "denied":
            why = f" (reason: {(req.status.get('denial') or {}).get('reason', '')})"
        elif req.state == "pending":
            approvals = len(req.status.get("approvals", []))
            why = f" ({approvals} of {req.status.get('approvals_required')} approvals)"
        raise ReleaseError(
            f"{request_id} is {req.state}{why}: only approved and delivered releases can be "
            "fetched (`bedside_release_status_request` lists them)"
        )
    if (
        not isinstance(offset, int)
        or isinstance(offset, bool)
        or offset < 0
        or (length is not None and (not isinstance(length, int) or length <= 0))
    ):
        raise ReleaseError("bedside_release_fetch_request: offset and length must be integers >= 0")
    kind = str(req.request.get("kind"))
    path = Path(delivered["artifact"])
    size = path.stat().st_size
    if size > max_bytes:
        raise ReleaseError(
            f"{request_id} is {size} bytes, over release.{kind}.max_bytes ({max_bytes})"
        )
    if offset > size:
        raise ReleaseError(f"{request_id}: offset {offset} is past the end ({size} bytes)")
    want = min(FETCH_CHUNK, size - offset if length is None else length)
    with path.open("rb") as fh:
        if offset == 0:
            whole = fh.read()
            if "sha256:" + hashlib.sha256(whole).hexdigest() != req.status.get("digest"):
                raise ReleaseError(f"{request_id}: the delivered artifact differs from its digest")
            data = whole[:want]
        else:
            fh.seek(offset)
            data = fh.read(want)
    envelope = json.loads(Path(delivered["attestation"]).read_text())
    return {
        "status": "ok",
        "id": req.id,
        "kind": kind,
        "filename": req.request["filename"],
        "digest": req.status["digest"],
        "size": size,
        "offset": offset,
        "data": base64.b64encode(data).decode(),
        "attestation": envelope,
    }


def read_requests(state_dir: Path) -> list[ReleaseRequest]:
    outbox = state_dir / "outbox"
    if not outbox.is_dir():
        return []
    return [
        read_request(state_dir, f.name)
        for f in sorted(outbox.iterdir())
        if f.is_dir() and _ID.match(f.name) and (f / "request.json").exists()
    ]


def session_dirs(state_dir: Path) -> list[Path]:
    """The session state directories under `state_dir`.

    A custodian may point at one session's directory (it holds `airlock.json`) or at the
    gateway's `--state-dir`, which holds one directory per session: `<state>/<session>/`.
    """
    state = Path(state_dir)
    if (state / "airlock.json").is_file():
        return [state]
    if not state.is_dir():
        raise ReleaseError(
            f"{state}: no such directory; pass the gateway's --state-dir (or one session's "
            "directory under it) as `bedside review --state DIR` or BEDSIDE_STATE"
        )
    found = sorted(d for d in state.iterdir() if d.is_dir() and (d / "airlock.json").is_file())
    if not found:
        raise ReleaseError(
            f"{state}: no airlock.json here nor in any session directory under it; pass the "
            "gateway's --state-dir (the one given to `bedside gateway start`) as "
            "`bedside review --state DIR` or BEDSIDE_STATE"
        )
    return found


def find_session(state_dir: Path, request_id: str) -> Path:
    """The session directory under `state_dir` whose outbox holds `request_id`."""
    if not _ID.match(request_id):
        raise ReleaseError(
            f"{request_id!r} is not a release request id (r-YYYYMMDDhhmmss-"
            "xxxxxx); `bedside review list` shows them"
        )
    dirs = session_dirs(state_dir)
    for d in dirs:
        if (d / "outbox" / request_id / "request.json").is_file():
            return d
    if len(dirs) == 1:
        return dirs[0]  # the single-session errors name the outbox
    raise ReleaseError(
        f"no release request {request_id} in any of the {len(dirs)} sessions under {state_dir}; "
        "`bedside review list` shows them"
    )


def owner_alive(state_dir: Path) -> int | None:
    """The pid of a live process that owns this session's ledger (the sentry), if any."""
    try:
        pid = int(json.loads((state_dir / "airlock.json").read_text()).get("owner_pid") or 0)
    except (OSError, ValueError, TypeError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _validate_request(folder_id: str, r: Any) -> list[str]:
    problems = []
    if not isinstance(r, dict):
        return ["request.json is not an object"]
    if r.get("id") != folder_id or not _ID.match(folder_id):
        problems.append("the request id does not match its folder")
    kind = r.get("kind")
    if kind not in KINDS:
        problems.append(f"unknown kind {kind!r}")
    elif r.get("format") not in _FORMATS[kind]:
        problems.append(f"format {r.get('format')!r} is not allowed for a {kind}")
    if not isinstance(r.get("filename"), str) or not _FILE.match(r["filename"]):
        problems.append("the artifact file name is not a plain file name")
    return problems


def _cells(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int | str) and len(str(v)) <= 64][:200]


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            inner = json.loads(value)
        except ValueError:
            return [value]
        return [value] if isinstance(inner, str) else _json_strings(inner)
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_json_strings(k), *_json_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _policy_bits(path: Path) -> tuple[ReleaseRules, str, str, int | None, Any]:
    from bedside.policy import load_policy  # type: ignore[attr-defined]

    policy = load_policy(path)
    rules = (
        policy.release
        if isinstance(policy.release, ReleaseRules)
        else ReleaseRules.from_dict(policy.release, path=str(path))
    )
    n_records, find = None, None
    try:
        from bedside.policy import IdentifierIndex, load_dataset  # type: ignore[attr-defined]

        frames = []
        total = 0
        for ds in policy.datasets.values():
            df = load_dataset(ds)
            total += len(df)
            frames.append((df, ds.identifiers))
        index = IdentifierIndex.from_frames(frames)
        n_records, find = total or None, index.first
    except ImportError:
        pass
    return rules, policy.id, policy.digest, n_records, find
