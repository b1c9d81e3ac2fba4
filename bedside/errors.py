"""The root error of bedside and the per-domain errors every subsystem raises.

Each error carries a `diagnostics()` text meant for the person who has to act on it (a custodian
fixing a policy, a reviewer reading a failed verification); the CLI prints it and exits non-zero.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every error bedside raises on purpose."""

    def diagnostics(self) -> str:
        return str(self)


class PolicyError(Error):
    """A policy file is malformed or asks for something impossible.

    `path` and `line` locate the problem; `fix` says what to write instead.
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, fix: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.fix = fix

    def diagnostics(self) -> str:
        where = self.path or "<policy>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def __str__(self) -> str:
        return self.diagnostics()


class _EntryError(Error):
    """An error about one ledger entry: `index` is that entry, when there is one."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index

    def diagnostics(self) -> str:
        if self.index is None:
            return self.message
        return f"entry {self.index}: {self.message}"

    def __str__(self) -> str:
        return self.diagnostics()


class LedgerError(Error):
    """A ledger cannot be read or written."""


class LedgerIntegrityError(_EntryError, LedgerError):
    """A ledger fails verification. `index` is the first bad entry, when there is one."""


class SignatureError(LedgerIntegrityError):
    """A signature does not verify, or no trusted key signed."""


class AnchorError(_EntryError):
    """An on-chain anchor is missing, wrong, or not final. `index`: the ledger's anchor entry."""


class GuardError(Error):
    """The output guard cannot make a decision (never raised to hide a block)."""


class GatewayError(Error):
    """The sentry, the sandbox or Enterprise Gateway failed to start or stopped."""


class ReleaseError(Error):
    """A release request is refused or an attestation does not verify."""
