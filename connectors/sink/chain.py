"""The tamper-evident log: every delivery, claim, return, feedback and lift, hash-chained
and signed with the platform's key.

An entry commits to the one before it: its ``hash`` is SHA-256 over the canonical JSON
of the entry (sorted keys, no spaces, UTF-8) followed by the previous entry's hash, and
its ``signature`` is the platform's Ed25519 signature of that hash. Changing an entry
needs a new hash and a new signature (the private key); deleting or moving one breaks
the link of the entry after it; the signed head of every chain (``audit_chain_heads``)
catches the loss of the last entries.

**One chain per source partition** (``dualnotice.pushes/3``, ``dept.hz-amr.inbox/0``).
A partition's order is a fact of the data, whereas the order in which a consumer
interleaves partitions depends on batching: so a backfill rebuilds byte for byte the
same chains — same hashes, and the same signatures, Ed25519 being deterministic — as
live processing made. Entries are appended in offset order inside the transaction
that stores the rows and the offsets; an entry whose ``entry_id`` is already in the log
(a record delivered twice) is not appended again.

The key is made on first use at ``XIETONG_SINK_AUDIT_KEY`` (default
``<home>/audit/platform-ed25519.pem``, mode 0600) with its public key beside it
(``….pub.pem``), which is all :func:`verify` needs::

    xietong audit verify          # exit 0: intact; 1: names the first bad entry per chain
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg2.extensions import connection as Connection

from connectors.sink.tables import AuditFact

GENESIS = "0" * 64


# -- the platform's key ---------------------------------------------------------------------


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The platform's signing key at ``path``; made (and its public key exported) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 and renamed into place: another process starting at the same moment
    # either sees no key or the whole one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public_key_path(path).write_bytes(export_public_key(key))
    try:
        os.link(temporary, path)  # fails if another process won the race
    except FileExistsError:
        temporary.unlink()
        return load_or_create_key(path)
    temporary.unlink()
    return key


def export_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key at ``path`` (a ``.pub.pem``), or the one of the private key there."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        assert isinstance(private, Ed25519PrivateKey)
        return private.public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


# -- entries --------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _instant(value: dt.datetime) -> str:
    """A timestamp as the hash sees it: UTC, milliseconds (what Avro and PostgreSQL keep)."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")


#: The fields of an entry its hash covers as they are (its time and source it covers too).
_HASHED_AS_THEY_ARE = ("chain", "entry_id", "kind", "event_id", "uscc", "department_code")


@dataclass(frozen=True)
class Entry:
    """One entry of a chain, as stored in ``audit_log``."""

    chain: str
    position: int
    entry_id: str
    kind: str
    event_id: str
    uscc: str
    department_code: str | None
    occurred_at: dt.datetime
    source_topic: str
    source_partition: int
    source_offset: int
    details: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str

    def body(self) -> dict[str, Any]:
        """What the hash covers: everything but the position (the links give the order)."""
        return {
            **{name: getattr(self, name) for name in _HASHED_AS_THEY_ARE},
            "occurred_at": _instant(self.occurred_at),
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "details": self.details,
        }

    def computed_hash(self) -> str:
        return entry_hash(self.body(), self.prev_hash)


def entry_hash(body: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_json(body) + prev_hash.encode()).hexdigest()


def head_message(chain: str, position: int, hash_: str) -> bytes:
    return f"{chain}|{position}|{hash_}".encode()


ENTRY_COLUMNS = (
    "chain",
    "position",
    "entry_id",
    "kind",
    "event_id",
    "uscc",
    "department_code",
    "occurred_at",
    "source_topic",
    "source_partition",
    "source_offset",
    "details",
    "prev_hash",
    "hash",
    "signature",
)


@dataclass(frozen=True)
class Candidate:
    """A fact read at a source position, to be appended to that partition's chain."""

    fact: AuditFact
    topic: str
    partition: int
    offset: int

    @property
    def chain(self) -> str:
        return f"{self.topic}/{self.partition}"


class Appender:
    """Appends facts to their chains inside the caller's transaction."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    def append(self, cursor: Any, candidates: list[Candidate]) -> list[Entry]:
        """Append each new fact (in the order given: offset order per chain); the entries
        appended. Chain heads are locked for the rest of the transaction."""
        if not candidates:
            return []
        ids = [c.fact.entry_id for c in candidates]
        cursor.execute("SELECT entry_id FROM audit_log WHERE entry_id = ANY(%s)", (ids,))
        seen = {row[0] for row in cursor.fetchall()}
        chains = sorted({c.chain for c in candidates})
        cursor.execute(
            "SELECT chain, position, hash FROM audit_chain_heads WHERE chain = ANY(%s)"
            " ORDER BY chain FOR UPDATE",
            (chains,),
        )
        heads = {chain: (position, hash_) for chain, position, hash_ in cursor.fetchall()}
        appended: list[Entry] = []
        for candidate in candidates:
            fact = candidate.fact
            if fact.entry_id in seen:
                continue
            seen.add(fact.entry_id)
            position, prev_hash = heads.get(candidate.chain, (0, GENESIS))
            unsigned = Entry(
                candidate.chain,
                position + 1,
                fact.entry_id,
                fact.kind,
                fact.event_id,
                fact.uscc,
                fact.department_code,
                fact.occurred_at,
                candidate.topic,
                candidate.partition,
                candidate.offset,
                fact.details,
                prev_hash,
                "",
                "",
            )
            hash_ = unsigned.computed_hash()
            signature = self.key.sign(bytes.fromhex(hash_)).hex()
            entry = Entry(**{**unsigned.__dict__, "hash": hash_, "signature": signature})
            appended.append(entry)
            heads[candidate.chain] = (entry.position, hash_)
        if not appended:
            return []
        from psycopg2.extras import execute_values

        execute_values(
            cursor,
            f"INSERT INTO audit_log ({', '.join(ENTRY_COLUMNS)}) VALUES %s",
            [
                tuple(
                    json.dumps(e.details, ensure_ascii=False) if c == "details" else getattr(e, c)
                    for c in ENTRY_COLUMNS
                )
                for e in appended
            ],
        )
        moved = {e.chain for e in appended}
        execute_values(
            cursor,
            "INSERT INTO audit_chain_heads (chain, position, hash, signature) VALUES %s"
            " ON CONFLICT (chain) DO UPDATE SET position = EXCLUDED.position,"
            " hash = EXCLUDED.hash, signature = EXCLUDED.signature",
            [
                (
                    chain,
                    heads[chain][0],
                    heads[chain][1],
                    self.key.sign(head_message(chain, *heads[chain])).hex(),
                )
                for chain in sorted(moved)
            ],
        )
        return appended


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """The first thing wrong with one chain."""

    chain: str
    problem: str  # modified | deleted | reordered
    position: int
    entry_id: str | None
    detail: str

    def __str__(self) -> str:
        entry = f" entry {self.entry_id}" if self.entry_id else ""
        return f"{self.chain}: {self.problem} at position {self.position}{entry}: {self.detail}"


@dataclass(frozen=True)
class Verification:
    chains: int
    entries: int
    findings: list[Finding]

    @property
    def intact(self) -> bool:
        return not self.findings


def _signed(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        key.verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_chain(
    key: Ed25519PublicKey, chain: str, entries: list[Entry], head: tuple[int, str, str] | None
) -> Finding | None:
    """The first modified, deleted or reordered entry of one chain (in position order)."""
    hashes = {entry.hash: entry for entry in entries}
    expected_prev, expected_position = GENESIS, 1
    for entry in entries:
        if entry.computed_hash() != entry.hash or not _signed(
            key, entry.signature, bytes.fromhex(entry.hash)
        ):
            return Finding(
                chain,
                "modified",
                entry.position,
                entry.entry_id,
                "its content does not match its hash and signature",
            )
        if entry.prev_hash != expected_prev:
            if entry.prev_hash in hashes:
                before = hashes[entry.prev_hash]
                return Finding(
                    chain,
                    "reordered",
                    entry.position,
                    entry.entry_id,
                    f"it follows {before.entry_id} (position {before.position}),"
                    f" not the entry at position {entry.position - 1}",
                )
            return Finding(
                chain,
                "deleted",
                expected_position,
                None,
                f"the entry before {entry.entry_id} (position {entry.position}) is missing",
            )
        if entry.position != expected_position:
            return Finding(
                chain,
                "reordered",
                entry.position,
                entry.entry_id,
                f"its position should be {expected_position}",
            )
        expected_prev, expected_position = entry.hash, expected_position + 1
    if head is not None:
        position, hash_, signature = head
        if not _signed(key, signature, head_message(chain, position, hash_)):
            return Finding(chain, "modified", position, None, "the chain's signed head is forged")
        if position != expected_position - 1 or hash_ != expected_prev:
            return Finding(
                chain,
                "deleted",
                expected_position,
                None,
                f"the chain's signed head is entry {position}; the log ends at"
                f" {expected_position - 1}",
            )
    elif entries:
        return Finding(chain, "deleted", 0, None, "the chain's signed head is missing")
    return None


def read_entries(cursor: Any, chain: str) -> Iterator[Entry]:
    cursor.execute(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_log WHERE chain = %s ORDER BY position",
        (chain,),
    )
    for row in cursor.fetchall():
        yield Entry(*row)


def verify(conn: Connection, key: Ed25519PublicKey) -> Verification:
    """Check every chain of the log at ``conn``."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT chain, position, hash, signature FROM audit_chain_heads")
        heads = {chain: (position, hash_, sig) for chain, position, hash_, sig in cursor}
        cursor.execute("SELECT DISTINCT chain FROM audit_log")
        chains = sorted({row[0] for row in cursor.fetchall()} | set(heads))
        findings: list[Finding] = []
        count = 0
        for chain in chains:
            entries = list(read_entries(cursor, chain))
            count += len(entries)
            finding = verify_chain(key, chain, entries, heads.get(chain))
            if finding is not None:
                findings.append(finding)
    conn.rollback()
    return Verification(len(chains), count, findings)
