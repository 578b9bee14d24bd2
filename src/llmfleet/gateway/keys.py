"""API keys: how they look, how they are stored (only as SHA-256 digests), and managed.

A key record is a Redis hash at `llmfleet:key:<digest>`; the set `llmfleet:keys` lists the
digests. Every new key and every change is announced on `llmfleet:keys:changed` (the digest),
so each gateway reads that record again at once: every gateway holds every record in memory,
which is what lets it judge any valid key while Redis is down.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import redis

KEY_PREFIX = "sk-lf-"
# 32 random bytes, URL-safe base64 without padding: 43 characters.
KEY_PATTERN = re.compile(r"^sk-lf-[A-Za-z0-9_-]{43}$")
RECORD = "llmfleet:key:"
INDEX = "llmfleet:keys"
CHANGED = "llmfleet:keys:changed"
OVERRIDES = ("requests", "window_ms", "max_concurrent")


def digest(key: str) -> str:
    """The only form in which a key is stored, logged or compared."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_digest: str) -> str:
    """A short, public handle for a key (the start of its digest), safe to print and log."""
    return key_digest[:12]


def looks_like_key(candidate: str) -> bool:
    return bool(KEY_PATTERN.match(candidate))


@dataclass(frozen=True)
class KeyRecord:
    digest: str
    client: str
    tier: str
    created: float
    revoked: bool
    hint: str  # the key's first characters, so its owner can tell keys apart
    requests: int | None = None  # per-key overrides of the tier's limits
    window_ms: int | None = None
    max_concurrent: int | None = None

    @property
    def id(self) -> str:
        return key_id(self.digest)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "client": self.client, "tier": self.tier, "hint": self.hint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "revoked": self.revoked,
            "overrides": {name: getattr(self, name) for name in OVERRIDES
                          if getattr(self, name) is not None},
        }


class UnknownKey(LookupError):
    """No key matches; the message says which id or key was asked for."""


class BadExport(ValueError):
    """A line of a key export that cannot be imported; the message names line, field, value
    and what is allowed."""


@dataclass(frozen=True)
class ImportResult:
    added: int
    replaced: int
    kept: int  # already there and left as it was (without overwrite)


def export_line(record: KeyRecord) -> str:
    """One record as a JSON line: its digest and fields, never a key (none is stored)."""
    return json.dumps(asdict(record), sort_keys=True)


def parse_export(lines: Iterable[str], tiers: set[str]) -> list[KeyRecord]:
    """Every record of an export, all checked before any is written."""
    records, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise BadExport(f"line {number}: not JSON") from None
        if not isinstance(data, dict):
            raise BadExport(f"line {number}: a JSON object per line is expected")
        record = _record_of(data, number, tiers)
        if record.digest in seen:
            raise BadExport(f"line {number}: digest {key_id(record.digest)}... appears twice")
        seen.add(record.digest)
        records.append(record)
    return records


def _record_of(data: dict, number: int, tiers: set[str]) -> KeyRecord:
    def bad(field: str, allowed: str) -> BadExport:
        return BadExport(f"line {number}: {field} = {data.get(field)!r}; {allowed}")

    if not isinstance(data.get("digest"), str) or not re.fullmatch(r"[0-9a-f]{64}",
                                                                   data["digest"]):
        raise bad("digest", "a SHA-256 digest (64 lower-case hex digits), never a raw key")
    client = data.get("client")
    if not isinstance(client, str) or not client or len(client) > 128 or not client.isprintable():
        raise bad("client", "1-128 printable characters")
    if data.get("tier") not in tiers:
        raise bad("tier", "a configured tier: " + ", ".join(sorted(tiers)))
    if not isinstance(data.get("created"), int | float):
        raise bad("created", "seconds since the epoch")
    if not isinstance(data.get("revoked"), bool):
        raise bad("revoked", "true or false")
    if not isinstance(data.get("hint", ""), str):
        raise bad("hint", "text")
    for name in OVERRIDES:
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise bad(name, "a whole number of at least 1, or null")
    unknown = set(data) - {"digest", "client", "tier", "created", "revoked", "hint",
                           *OVERRIDES}
    if unknown:
        raise BadExport(f"line {number}: unknown fields {sorted(unknown)}")
    return KeyRecord(data["digest"], client, data["tier"], float(data["created"]),
                     data["revoked"], data.get("hint", ""),
                     *(data.get(name) for name in OVERRIDES))


class KeyStore:
    """Create, list, revoke and re-tier keys in one Redis."""

    def __init__(self, client: redis.Redis, tiers: set[str]):
        self.redis = client
        self.tiers = tiers

    @classmethod
    def connect(cls, url: str, password: str | None, tiers: set[str]) -> KeyStore:
        """A store on the Redis at `url`, with timeouts a person at a terminal can wait out."""
        client = redis.Redis.from_url(url, password=password, decode_responses=True,
                                      socket_timeout=5, socket_connect_timeout=5)
        return cls(client, tiers)

    def create(self, client: str, tier: str, *, requests: int | None = None,
               window_ms: int | None = None, max_concurrent: int | None = None
               ) -> tuple[str, KeyRecord]:
        """A new key for `client`; the raw key is returned once and never stored."""
        self._check_tier(tier)
        if not client or len(client) > 128 or not client.isprintable():
            raise ValueError(f"client name {client!r} must be 1-128 printable characters")
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(digest(raw), client, tier, time.time(), False, raw[:10] + "...",
                           requests, window_ms, max_concurrent)
        fields = {"client": client, "tier": tier, "created": repr(record.created),
                  "revoked": "0", "hint": record.hint}
        fields.update({n: str(getattr(record, n)) for n in OVERRIDES
                       if getattr(record, n) is not None})
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(RECORD + record.digest, mapping=fields)
            pipe.sadd(INDEX, record.digest)
            pipe.publish(CHANGED, record.digest)
            pipe.execute()
        return raw, record

    def list(self) -> list[KeyRecord]:
        records = [self._load(d) for d in sorted(self.redis.smembers(INDEX))]
        return sorted((r for r in records if r is not None), key=lambda r: r.created)

    def find(self, key_or_id: str) -> KeyRecord:
        """By raw key, or by id (a unique prefix of the digest, at least 6 characters)."""
        if looks_like_key(key_or_id):
            record = self._load(digest(key_or_id))
        else:
            if len(key_or_id) < 6 or not re.fullmatch(r"[0-9a-f]+", key_or_id):
                raise UnknownKey(f"{key_or_id!r} is neither a key nor a key id (6+ hex digits)")
            matches = [d for d in self.redis.smembers(INDEX) if d.startswith(key_or_id)]
            if len(matches) > 1:
                raise UnknownKey(f"key id {key_or_id!r} is ambiguous; give more digits")
            record = self._load(matches[0]) if matches else None
        if record is None:
            raise UnknownKey(f"no key matches {key_or_id!r}")
        return record

    def revoke(self, key_or_id: str) -> KeyRecord:
        record = self.find(key_or_id)
        self._update(record.digest, {"revoked": "1"})
        return self.find(record.digest)

    def set_tier(self, key_or_id: str, tier: str) -> KeyRecord:
        self._check_tier(tier)
        record = self.find(key_or_id)
        self._update(record.digest, {"tier": tier})
        return self.find(record.digest)

    def export(self) -> list[str]:
        """Every record as a JSON line (`export_line`), oldest first."""
        return [export_line(record) for record in self.list()]

    def import_records(self, records: list[KeyRecord], *, overwrite: bool = False
                       ) -> ImportResult:
        """Write `records` (checked by `parse_export`), announcing each so every gateway reads
        it; one already here is kept as it is unless `overwrite`."""
        present = self.redis.smembers(INDEX)
        added = replaced = kept = 0
        with self.redis.pipeline(transaction=True) as pipe:
            for record in records:
                if record.digest in present and not overwrite:
                    kept += 1
                    continue
                fields = {"client": record.client, "tier": record.tier,
                          "created": repr(record.created),
                          "revoked": "1" if record.revoked else "0", "hint": record.hint}
                fields.update({n: str(getattr(record, n)) for n in OVERRIDES
                               if getattr(record, n) is not None})
                pipe.delete(RECORD + record.digest)
                pipe.hset(RECORD + record.digest, mapping=fields)
                pipe.sadd(INDEX, record.digest)
                pipe.publish(CHANGED, record.digest)
                if record.digest in present:
                    replaced += 1
                else:
                    added += 1
            pipe.execute()
        return ImportResult(added, replaced, kept)

    def _update(self, key_digest: str, fields: dict[str, str]) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(RECORD + key_digest, mapping=fields)
            pipe.publish(CHANGED, key_digest)
            pipe.execute()

    def _check_tier(self, tier: str) -> None:
        if tier not in self.tiers:
            raise ValueError(f"tier {tier!r} is not configured; allowed: "
                             + ", ".join(sorted(self.tiers)))

    def _load(self, key_digest: str) -> KeyRecord | None:
        fields = self.redis.hgetall(RECORD + key_digest)
        if not fields:
            return None
        return KeyRecord(
            key_digest, fields["client"], fields["tier"], float(fields["created"]),
            fields.get("revoked") == "1", fields.get("hint", ""),
            *(int(fields[n]) if n in fields else None for n in OVERRIDES),
        )
