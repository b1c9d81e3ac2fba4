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
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .connection import REGISTRY_KEY
from .mirror import SEALED
from .sessions import SessionRegistry

AUTH_RESOURCE = "bedside"
_ID = r"(?P<session>[A-Za-z0-9_.\-]+)"


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
    @web.authenticated
    @authorized
    async def post(self, session: str) -> None:
        self._status(session)
        mirror = self.registry.find(session)
        if mirror is None or mirror.send is None:
            raise web.HTTPError(409, f"session {session!r} has no live connection to the hospital")
        if mirror.state != SEALED:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[dict[str, Any]] = loop.create_future()
            request = mirror.control_request("bedside_seal_request", {"reason": "researcher"})

            def _answer(msg: dict[str, Any]) -> None:
                if not done.done():
                    done.set_result(msg)

            mirror.expect_reply(request["header"]["msg_id"], _answer)
            mirror.send(request)
            try:
                reply = await asyncio.wait_for(done, timeout=60)
            except TimeoutError as exc:
                raise web.HTTPError(504, "the hospital did not answer the seal request") from exc
            content = reply.get("content") or {}
            if content.get("status") != "ok":
                raise web.HTTPError(409, f"the hospital refused to seal: {content}")
            # The reply's receipt carries the metering, checkpoint and seal entries, but our
            # copy appends by index: wait until it holds the seal (messages still in flight on
            # iopub, entries fetched for a gap) so that what we answer and serve is final.
            seal = content.get("seal")
            if isinstance(seal, int):
                await _caught_up(mirror, seal + 1, timeout=60)
        self.finish(json.dumps(mirror.status()))


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
    @web.authenticated
    @authorized
    async def post(self, session: str) -> None:
        self._status(session)
        if importlib.util.find_spec("bedside.ledger.anchor") is None:
            raise web.HTTPError(
                501,
                "anchoring is not available in this build (bedside.ledger.anchor is missing); "
                "download the ledger and run `bedside ledger anchor` instead",
            )
        raise web.HTTPError(
            501, "anchoring from the server is not wired yet; run `bedside ledger anchor LEDGER`"
        )


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


def handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    root = url_path_join(base_url, "bedside", "sessions")
    return [
        (root, SessionsHandler),
        (url_path_join(root, _ID), SessionHandler),
        (url_path_join(root, _ID, "seal"), SealHandler),
        (url_path_join(root, _ID, "anchor"), AnchorHandler),
        (url_path_join(root, _ID, "ledger"), LedgerFileHandler),
        (url_path_join(root, _ID, "openings"), OpeningsFileHandler),
    ]
