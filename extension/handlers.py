"""REST API under `/bedside/`: the researcher's sessions, their ledgers, seal and anchor.

Every handler is a jupyter_server `APIHandler` behind `@web.authenticated` and `@authorized`
(resource `bedside`), so the server token, the identity provider and the authorizer apply
exactly as they do to `/api/kernels`.

    GET  /bedside/sessions                the sessions this server has seen
    GET  /bedside/sessions/{id}           one session: state, entries, root, checkpoint, anchor
    POST /bedside/sessions/{id}/seal      ask the hospital to seal (metering, final checkpoint)
    POST /bedside/sessions/{id}/anchor    anchor the last cosigned checkpoint on a chain
    GET  /bedside/sessions/{id}/ledger    the ledger file
    GET  /bedside/sessions/{id}/openings  the private openings file
    GET  /bedside/sessions/{id}/releases  the session's release requests and their review state
    POST /bedside/sessions/{id}/releases/{request}/fetch
                                          fetch an approved release into releases/, verified
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from bedside.errors import AnchorError, Error, GatewayError, LedgerError
from bedside.ledger import Ledger, Verifier, open_checkpoint
from bedside.ledger.note import Checkpoint, parse_note

from .connection import REGISTRY_KEY
from .mirror import INTERRUPTED, SEALED, SessionMirror
from .sessions import SessionRegistry

AUTH_RESOURCE = "bedside"
_ID = r"(?P<session>[A-Za-z0-9_.\-]+)"
_REQUEST = r"(?P<request>r-[0-9]{14}-[0-9a-f]{6})"


class _Sessions:
    """What every bedside handler needs: the session registry of this server."""

    auth_resource = AUTH_RESOURCE
    settings: dict[str, Any]

    @property
    def registry(self) -> SessionRegistry:
        registry = self.settings.get(REGISTRY_KEY)
        if not isinstance(registry, SessionRegistry):
            raise web.HTTPError(503, "the bedside extension is not loaded")
        return registry

    def _status(self, session: str) -> dict[str, Any]:
        status = self.registry.status(session)
        if status is None:
            raise web.HTTPError(404, f"no bedside session {session!r}")
        return status


class BedsideHandler(_Sessions, APIHandler):
    """JSON endpoints."""


class SessionsHandler(BedsideHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({"sessions": self.registry.list()}))


class SessionHandler(BedsideHandler):
    @web.authenticated
    @authorized
    async def get(self, session: str) -> None:
        self.finish(json.dumps(self._status(session)))


class SealHandler(BedsideHandler):
    """Seal a session at the hospital, whether or not a browser is connected to its kernel.

    Without an open websocket of the kernel the server opens its own (`control.ControlLink`)
    for the exchange. A hospital that is gone (gateway unreachable, kernel no longer there or
    restarted into a new session) is answered at once with the reason, and the session is
    marked interrupted: its ledger copy stays as it is, valid up to the last receipt.
    """

    @web.authenticated
    @authorized
    async def post(self, session: str) -> None:
        status = self._status(session)
        mirror = self.registry.find(session)
        if mirror is None:
            if status.get("state") == SEALED:
                self.finish(json.dumps(status))
                return
            raise web.HTTPError(
                409,
                f"session {session!r} is not live on this server (its kernel ran before the "
                f"server restarted); its ledger copy ({status.get('entries')} entries) stays as "
                "it is and verifies up to its last receipt",
            )
        if mirror.state != SEALED:
            if mirror.state == INTERRUPTED:
                raise web.HTTPError(409, _interrupted(mirror, "cannot be sealed"))
            async with hospital_link(self.registry, mirror):
                await self._seal(mirror, session)
        self.finish(json.dumps(mirror.status()))

    async def _seal(self, mirror: SessionMirror, session: str) -> None:
        loop = asyncio.get_running_loop()
        # Let the last cell's checkpoint be cosigned first (its request then reaches the
        # hospital before the seal), so the sealed ledger ends on a cosigned checkpoint.
        deadline = loop.time() + 10
        while loop.time() < deadline and mirror.state != INTERRUPTED:
            mirror.cosign_due()  # now, not after the mirror's cosign_delay
            if mirror.settled:
                break
            await asyncio.sleep(0.05)
        done: asyncio.Future[dict[str, Any]] = loop.create_future()
        # Naming the session: a kernel restarted at the hospital runs a new one, which the
        # sentry then refuses to seal in its place (SessionMismatch).
        content = {"reason": "researcher", "session": mirror.session_id}
        request = mirror.control_request("bedside_seal_request", content)

        def _answer(msg: dict[str, Any]) -> None:
            if not done.done():
                done.set_result(msg)

        mirror.expect_reply(request["header"]["msg_id"], _answer)
        try:
            if mirror.send is None:
                raise GatewayError("the connection to the hospital closed")
            mirror.send(request)
        except Exception as exc:  # noqa: BLE001 - a closed websocket raises several kinds
            # (a websocket that closed just now: its reader marks the session interrupted
            # if the gateway went away; a browser that left does not end the session)
            raise web.HTTPError(
                502, f"cannot send the seal request to the hospital ({exc}); try again"
            ) from exc
        deadline = loop.time() + 60
        while not done.done():
            if mirror.state == INTERRUPTED:
                raise web.HTTPError(502, _interrupted(mirror, "the seal did not complete"))
            if loop.time() > deadline:
                raise web.HTTPError(504, "the hospital did not answer the seal request")
            await asyncio.wait([done], timeout=0.1)
        reply = done.result()
        content = reply.get("content") or {}
        if content.get("status") != "ok":
            if content.get("ename") == "SessionMismatch":
                mirror.mark_interrupted(str(content.get("evalue", "")))
                raise web.HTTPError(410, _interrupted(mirror, ""))
            raise web.HTTPError(409, f"the hospital refused to seal: {content}")
        # The reply's receipt carries the metering, checkpoint and seal entries, but our
        # copy appends by index: wait until it holds the seal (messages still in flight on
        # iopub, entries fetched for a gap) so that what we answer and serve is final.
        seal = content.get("seal")
        if isinstance(seal, int):
            await _caught_up(mirror, seal + 1, timeout=60)
            # Then the checkpoint over the seal, which we cosigned on receipt (when the
            # hospital signed one) and the hospital logs: the sealed ledger ends on a tree
            # head both sides signed.
            try:
                if _tree_size(mirror.last_checkpoint) == seal + 1:
                    await _caught_up(mirror, seal + 2, timeout=30)
            except web.HTTPError:
                self.log.warning(
                    "bedside session %s: the hospital logged no cosigned checkpoint over "
                    "the seal; the ledger's last cosigned checkpoint precedes it",
                    session,
                )


@contextlib.asynccontextmanager
async def hospital_link(registry: SessionRegistry, mirror: SessionMirror) -> AsyncIterator[None]:
    """The kernel's connection to the hospital for a control exchange: a browser's websocket
    when one is open, else the server's own (`control.ControlLink`) until the exchange ends.
    A hospital that is gone answers at once (HTTPError) and the session is marked interrupted."""
    from .control import ControlLink, HospitalGone

    links = registry.connections.get(mirror.kernel_id, [])
    if mirror.send is not None and any(ln.ws is not None and not ln.disconnected for ln in links):
        yield
        return
    link = ControlLink(registry, mirror)
    try:
        await link.open()
    except HospitalGone as exc:
        mirror.mark_interrupted(exc.diagnostics())
        raise web.HTTPError(exc.status, _interrupted(mirror, "")) from exc
    try:
        yield
    finally:
        link.close()


def _interrupted(mirror: SessionMirror, what: str) -> str:
    """Why an interrupted session cannot be sealed, and what its researcher still holds."""
    size = 0 if mirror.ledger is None else mirror.ledger.size
    head = f"session {mirror.kernel_id} is interrupted"
    if what:
        head += f" and {what}" if what.startswith("cannot") else f": {what}"
    return (
        f"{head} ({mirror.reason}). Its ledger copy holds {size} entries and stays valid up "
        "to the last receipt: verify it with `bedside ledger verify` (it has no seal) and "
        "replay it with `bedside ledger replay`."
    )


def _tree_size(note: str | None) -> int:
    """The tree size a checkpoint note signs, or -1."""
    if not note:
        return -1
    try:
        return Checkpoint.parse(parse_note(note).text).size
    except (Error, ValueError):
        return -1


async def _caught_up(mirror: Any, size: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while mirror.ledger is None or mirror.ledger.size < size:
        if loop.time() > deadline:
            raise web.HTTPError(
                504,
                f"the session is sealed at the hospital, but our ledger copy holds "
                f"{0 if mirror.ledger is None else mirror.ledger.size} of {size} entries; "
                "see unverified.jsonl in the session directory",
            )
        await asyncio.sleep(0.05)
    mirror.ledger.flush()


class AnchorHandler(BedsideHandler):
    """Anchor the session's last cosigned checkpoint, as `bedside ledger anchor` does.

    The session must be sealed (the researcher's copy takes no more hospital entries); the
    `anchor` entry is appended to the researcher's copy, after the seal.
    """

    @web.authenticated
    @authorized
    async def post(self, session: str) -> None:
        status = self._status(session)
        config = self.registry.config
        missing = [
            name
            for name, value in (
                ("Bedside.anchor_rpc (BEDSIDE_ANCHOR_RPC)", config.anchor_rpc),
                ("Bedside.anchor_contract (BEDSIDE_ANCHOR_CONTRACT)", config.anchor_contract),
                ("Bedside.anchor_key_file (BEDSIDE_ANCHOR_KEY)", config.anchor_key_file),
            )
            if not value
        ]
        if missing:
            raise web.HTTPError(
                503, f"anchoring is not configured on this server: set {', '.join(missing)}"
            )
        if status.get("state") != SEALED:
            raise web.HTTPError(
                409, f"session {session!r} is {status.get('state')}: seal it before anchoring"
            )
        directory = self.registry.directory(session)
        assert directory is not None  # _status found it
        mirror = self.registry.find(session)
        own = mirror is None or mirror.ledger is None
        ledger = Ledger.open(directory / "session.ledger") if own else mirror.ledger
        assert ledger is not None
        try:
            keys = [k for k in (status.get("custodian_key"), status.get("researcher_key")) if k]
            anchor = await asyncio.to_thread(_anchor, ledger, keys, config)
        finally:
            if own:
                ledger.close()
        if mirror is not None:
            mirror.anchor = anchor
            mirror.save_status()
            self.finish(json.dumps(mirror.status()))
            return
        status["anchor"] = anchor
        status["entries"] = int(anchor["index"]) + 1
        (directory / "status.json").write_text(json.dumps(status, indent=1, sort_keys=True))
        self.finish(json.dumps(status))


def _anchor(ledger: Ledger, keys: list[str], config: Any) -> dict[str, Any]:
    """Anchor the ledger's last checkpoint entry that carries every key's signature and append
    the anchor entry; the entry (with its index). Runs in a thread: web3 blocks."""
    from web3.exceptions import Web3Exception

    from bedside.ledger import anchor as A
    from bedside.ledger.anchor import _redact, _scrub

    verifiers = [Verifier(k) for k in keys]
    try:
        account = A.load_key(config.anchor_key_file)
        w3 = A.connect(config.anchor_rpc)
        chain_id = int(w3.eth.chain_id)
        contract = w3.to_checksum_address(config.anchor_contract)
        index, note = _last_cosigned(ledger, verifiers, chain_id, contract)
        receipt = A.anchor_checkpoint(
            w3,
            contract,
            account,
            note.encode("utf-8"),
            A.checkpoint_tree_size(note.encode("utf-8")),
            timeout=config.anchor_timeout,
        )
        A.wait_for_confirmations(w3, receipt.block, 1, timeout=config.anchor_timeout)
    except (AnchorError, LedgerError) as exc:
        raise web.HTTPError(409, exc.diagnostics()) from exc
    except (OSError, ValueError, Web3Exception) as exc:
        rpc = config.anchor_rpc
        raise web.HTTPError(
            502, f"the JSON-RPC endpoint {_redact(rpc)} failed: {_scrub(str(exc), rpc)}"
        ) from exc
    entry = receipt.to_entry(index, session=ledger.session_id)
    try:
        at = ledger.append(entry, sync=True)
    except LedgerError as exc:
        raise web.HTTPError(
            500,
            f"anchored in {receipt.tx} but the entry could not be appended ({exc}); append it "
            f"by hand: {json.dumps(entry, sort_keys=True)}",
        ) from exc
    return {"index": at, **{k: v for k, v in entry.items() if k not in ("v", "session")}}


def _last_cosigned(
    ledger: Ledger, verifiers: list[Verifier], chain_id: int, contract: str
) -> tuple[int, str]:
    """(index, note) of the last checkpoint entry every verifier signed, unless anchored."""
    anchored: set[int] = set()
    for i in range(ledger.size - 1, -1, -1):
        entry = ledger.entry(i)
        kind = entry.get("kind")
        if kind == "anchor" and entry.get("chain_id") == chain_id:
            if str(entry.get("contract", "")).lower() == contract.lower():
                anchored.add(int(entry["checkpoint_index"]))
        elif kind == "checkpoint":
            note = str(entry.get("note", ""))
            try:
                _, names = open_checkpoint(note, verifiers)
            except Error:
                continue
            if len(names) < len(verifiers):
                continue
            if i in anchored:
                raise AnchorError(
                    f"the last cosigned checkpoint (entry {i}) is already anchored on chain "
                    f"{chain_id}"
                )
            return i, note
    raise AnchorError("the session ledger holds no checkpoint cosigned by the researcher")


class FileHandler(_Sessions, APIHandler):
    """File downloads: API handlers (403, never a login redirect) that answer in bytes."""

    filename = ""

    @web.authenticated
    @authorized
    async def get(self, session: str) -> None:
        directory = self.registry.directory(session)
        if directory is None:
            raise web.HTTPError(404, f"no bedside session {session!r}")
        mirror = self.registry.find(session)
        if mirror is not None and mirror.ledger is not None:
            mirror.ledger.flush()
        path = directory / self.filename
        if not path.is_file():
            raise web.HTTPError(404, f"session {session!r} has no {self.filename} yet")
        self.set_header("Content-Disposition", f'attachment; filename="{session}-{self.filename}"')
        self.finish(path.read_bytes(), set_content_type="application/octet-stream")


class LedgerFileHandler(FileHandler):
    filename = "session.ledger"


class OpeningsFileHandler(FileHandler):
    filename = "session.openings"


class ReleasesHandler(BedsideHandler):
    """The session's release requests, as the hospital's airlock reports them now."""

    @web.authenticated
    @authorized
    async def get(self, session: str) -> None:
        from . import releases

        self._status(session)
        directory = self.registry.directory(session)
        assert directory is not None  # _status found it
        mirror = self.registry.find(session)
        if mirror is None or mirror.send is None:
            # A past session: what this server fetched is all there is to say.
            self.finish(
                json.dumps(
                    {
                        "live": False,
                        "reason": "the session has no live connection to the hospital",
                        "releases": releases.offline(directory),
                    }
                )
            )
            return
        try:
            rows = await releases.list_releases(mirror)
        except releases.HospitalUnavailable as exc:
            raise web.HTTPError(504, exc.diagnostics()) from exc
        except Error as exc:
            raise web.HTTPError(502, exc.diagnostics()) from exc
        self.finish(json.dumps({"live": True, "session": mirror.session_id, "releases": rows}))


class ReleaseFetchHandler(BedsideHandler):
    """Fetch an approved release into `<server root>/releases/<name>/` and verify it there."""

    @web.authenticated
    @authorized
    async def post(self, session: str, request: str) -> None:
        from . import releases

        self._status(session)
        mirror = self.registry.find(session)
        if mirror is None:
            raise web.HTTPError(
                409,
                f"session {session!r} is not live on this server (its kernel ran before the "
                "server restarted); fetch its releases in the session that requested them",
            )
        if mirror.state == INTERRUPTED:
            raise web.HTTPError(409, _interrupted(mirror, "cannot fetch releases"))
        workspace = Path(self.settings.get("server_root_dir") or ".").expanduser()
        try:
            # the notebook need not be open: without its websocket, the server's own link
            async with hospital_link(self.registry, mirror):
                result = await releases.fetch(mirror, request, workspace)
        except releases.HospitalUnavailable as exc:
            raise web.HTTPError(504, exc.diagnostics()) from exc
        except releases.ReleaseVerificationError as exc:
            raise web.HTTPError(422, exc.diagnostics()) from exc
        except Error as exc:  # the hospital refused: not approved, denied, over the cap
            raise web.HTTPError(409, exc.diagnostics()) from exc
        self.finish(json.dumps(result))


def handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    root = url_path_join(base_url, "bedside", "sessions")
    return [
        (root, SessionsHandler),
        (url_path_join(root, _ID), SessionHandler),
        (url_path_join(root, _ID, "seal"), SealHandler),
        (url_path_join(root, _ID, "anchor"), AnchorHandler),
        (url_path_join(root, _ID, "ledger"), LedgerFileHandler),
        (url_path_join(root, _ID, "openings"), OpeningsFileHandler),
        (url_path_join(root, _ID, "releases"), ReleasesHandler),
        (url_path_join(root, _ID, "releases", _REQUEST, "fetch"), ReleaseFetchHandler),
    ]
