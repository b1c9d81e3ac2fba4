"""Ed25519 keys and C2SP signed notes, and C2SP tlog-checkpoint bodies.

Key and note formats are those of C2SP `signed-note` v1.0.0 (golang.org/x/mod/sumdb/note), so a
bedside checkpoint can be checked by any tool that reads Go checksum-database or Sigsum notes:

    signer key    PRIVATE+KEY+<name>+<hex key id>+base64(0x01 || seed32)
    verifier key  <name>+<hex key id>+base64(0x01 || pub32)
    key id        SHA-256(name || 0x0A || 0x01 || pub32)[:4]
    signature     "— <name> base64(key id || Ed25519 signature)"

A note may carry several signatures (the hospital signs, the researcher cosigns). Verification
ignores signatures by unknown keys and fails when no trusted key signed, or when a trusted key's
signature is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from bedside.errors import LedgerError, SignatureError

ALG_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "  # em dash and a space
_MAX_SIGNATURES = 100


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LedgerError(f"{what} is not valid base64") from exc


class Verifier:
    """A C2SP verifier key: `name+hexid+base64(0x01||pub)`."""

    def __init__(self, vkey: str) -> None:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _valid_name(parts[0]) or len(parts[1]) != 8:
            raise LedgerError(
                f"malformed verifier key {vkey[:60]!r}: expected name+hexid+base64 "
                "(as printed by `bedside keys new NAME`)"
            )
        name, hexid, b64 = parts
        raw = _b64decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise LedgerError(f"verifier key {name!r} is not an Ed25519 key")
        public = raw[1:]
        if key_id(name, public).hex() != hexid.lower():
            raise LedgerError(f"verifier key {name!r}: key id {hexid} does not match the key")
        self.name = name
        self.key_id = bytes.fromhex(hexid)
        self.public = public
        self._key = Ed25519PublicKey.from_public_bytes(public)

    @property
    def vkey(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    def verify(self, msg: bytes, sig: bytes) -> None:
        """Raise SignatureError unless `sig` is this key's Ed25519 signature of `msg`."""
        try:
            self._key.verify(sig, msg)
        except InvalidSignature as exc:
            raise SignatureError(f"signature by {self.name!r} does not verify") from exc

    def __repr__(self) -> str:
        return f"Verifier({self.vkey!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and other.vkey == self.vkey

    def __hash__(self) -> int:
        return hash(self.vkey)


class Signer:
    """An Ed25519 signing key with a C2SP name. Never leaves the machine it was made on."""

    def __init__(self, name: str, seed: bytes) -> None:
        if not _valid_name(name):
            raise LedgerError(
                f"key name {name!r} must be non-empty with no spaces and no '+' "
                "(for example: st-marys-custodian)"
            )
        if len(seed) != 32:
            raise LedgerError("an Ed25519 seed is 32 bytes")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = seed
        self.public = self._key.public_key().public_bytes_raw()
        # libsodium's secret key (seed || public): it signs in about two thirds of OpenSSL's
        # time, and the sentry signs every message leaving (a receipt) and every cell's end (a
        # checkpoint). Ed25519 is deterministic (RFC 8032): the same bytes either way.
        public, self._sodium_key = crypto_sign_seed_keypair(seed)
        if public != self.public:  # pragma: no cover - two implementations of one standard
            raise LedgerError("libsodium and OpenSSL derive different Ed25519 public keys")
        self.key_id = key_id(name, self.public)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, os.urandom(32))

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise LedgerError("malformed signer key: expected PRIVATE+KEY+name+hexid+base64")
        _, _, name, hexid, b64 = parts
        raw = _b64decode(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise LedgerError(f"signer key {name!r} is not an Ed25519 key")
        signer = cls(name, raw[1:])
        if signer.key_id.hex() != hexid.lower():
            raise LedgerError(f"signer key {name!r}: key id {hexid} does not match the key")
        return signer

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signer:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise LedgerError(f"{p}: cannot read signer key: {exc.strerror}") from exc
        try:
            return cls.from_skey(text)
        except LedgerError as exc:
            raise LedgerError(f"{p}: {exc}") from exc

    @property
    def skey(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{raw}"

    @property
    def verifier_key(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.verifier_key)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the signer key with mode 0600; refuse to overwrite an existing key."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise LedgerError(f"{p}: a key file already exists; choose another name") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(self.skey + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def sign(self, msg: bytes) -> bytes:
        """Raw Ed25519 signature (64 bytes)."""
        # crypto_sign returns signature || message (PyNaCl has no detached binding).
        return crypto_sign(bytes(msg), self._sodium_key)[:64]

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key id {self.key_id.hex()})"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    sig: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(self.key_id + self.sig).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise LedgerError("a note's text must end with a newline")
    if "\n\n" in text:
        raise LedgerError("a note's text must not contain a blank line")


def parse_note(note: str | bytes) -> Note:
    """Split a signed note into text and signature lines (no verification)."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureError("signed note is not UTF-8") from exc
    cut = note.rfind("\n\n")
    if cut < 0:
        raise SignatureError("malformed signed note: no blank line before the signatures")
    text, rest = note[: cut + 1], note[cut + 2 :]
    if not rest.endswith("\n"):
        raise SignatureError("malformed signed note: the last signature line has no newline")
    sigs: list[NoteSignature] = []
    for line in rest[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise SignatureError(f"malformed signature line {line[:40]!r}")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2 or not _valid_name(fields[0]):
            raise SignatureError(f"malformed signature line {line[:40]!r}")
        try:
            raw = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"signature by {fields[0]!r} is not base64") from exc
        if len(raw) < 5:
            raise SignatureError(f"signature by {fields[0]!r} is too short")
        sigs.append(NoteSignature(fields[0], raw[:4], raw[4:]))
    if not sigs:
        raise SignatureError("signed note carries no signature")
    if len(sigs) > _MAX_SIGNATURES:
        raise SignatureError("signed note carries too many signatures")
    return Note(text, tuple(sigs))


def sign_note(text: str, *signers: Signer) -> str:
    """Sign `text` (which must end in a newline) with each signer; returns the note."""
    _check_text(text)
    sigs = tuple(NoteSignature(s.name, s.key_id, s.sign(text.encode("utf-8"))) for s in signers)
    return Note(text, sigs).encode()


def cosign(note: str, signer: Signer) -> str:
    """Add `signer`'s signature to a signed note (replacing an older one by the same key)."""
    parsed = parse_note(note)
    new = NoteSignature(signer.name, signer.key_id, signer.sign(parsed.text.encode("utf-8")))
    kept = tuple(s for s in parsed.signatures if (s.name, s.key_id) != (signer.name, signer.key_id))
    return Note(parsed.text, (*kept, new)).encode()


def verify_note(note: str | bytes, verifiers: list[Verifier]) -> tuple[str, list[str]]:
    """Verify a signed note against trusted keys.

    Returns (text, names of the trusted keys that signed). Signatures by keys not in `verifiers`
    are ignored; a bad signature by a trusted key, or no trusted signature at all, raises
    SignatureError.
    """
    parsed = parse_note(note)
    by_id = {(v.name, v.key_id): v for v in verifiers}
    msg = parsed.text.encode("utf-8")
    signed: list[str] = []
    for s in parsed.signatures:
        verifier = by_id.get((s.name, s.key_id))
        if verifier is None:
            continue
        verifier.verify(msg, s.sig)
        if verifier.name not in signed:
            signed.append(verifier.name)
    if not signed:
        names = ", ".join(sorted({s.name for s in parsed.signatures}))
        trusted = ", ".join(sorted(v.name for v in verifiers)) or "none"
        raise SignatureError(
            f"no trusted key signed this note (signed by: {names}; trusted: {trusted}); "
            "pass the signer's verifier key with --key"
        )
    return parsed.text, signed


# --- C2SP tlog-checkpoint -------------------------------------------------------------------

_SIZE_RE = re.compile(r"^(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        lines.extend(self.extensions)
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, body: str | bytes) -> Checkpoint:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if not text.endswith("\n"):
            raise LedgerError("checkpoint body must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise LedgerError("checkpoint body needs origin, size and root lines")
        origin, size, root_b64 = lines[0], lines[1], lines[2]
        if not origin:
            raise LedgerError("checkpoint origin line is empty")
        if not _SIZE_RE.match(size):
            raise LedgerError(f"checkpoint size {size[:30]!r} is not a decimal number")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LedgerError("checkpoint root is not base64") from exc
        if len(root) != 32:
            raise LedgerError("checkpoint root is not a 32-byte hash")
        ext = tuple(lines[3:])
        if any(not e for e in ext):
            raise LedgerError("checkpoint extension lines must not be empty")
        return cls(origin, int(size), root, ext)


def open_checkpoint(note: str | bytes, verifiers: list[Verifier]) -> tuple[Checkpoint, list[str]]:
    """Verify a signed checkpoint note and parse its body. Returns (checkpoint, signer names)."""
    text, signed = verify_note(note, verifiers)
    return Checkpoint.parse(text), signed
