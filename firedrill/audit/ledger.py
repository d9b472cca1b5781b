"""A tamper-evident, append-only ledger of evidence records: a hash chain anchored by a HEAD file.

Layout of a ledger directory::

    000001-<run_id>.json   the record, exactly its canonical JSON + "\\n" (prev_sha256: null)
    000001-<run_id>.sig    optional: base64 Ed25519 signature over the record's canonical JSON bytes
    000002-<run_id>.json   prev_sha256 = SHA-256 of record 1's canonical JSON
    ...
    HEAD                   {"seq": N, "file": "00000N-<run_id>.json", "sha256": <record N>, "signature": ...}
    .lock                  fcntl lock taken by `append` (two appenders never fork the chain)

`verify` checks, in order, for every sequence number 1..N: the file exists and is the only one with
that number, it is a valid record stored byte for byte in canonical form, its run_id matches its file
name, its `prev_sha256` is the hash of the record before it (None for record 1), and, with a public key,
its signature. Then HEAD: it must name the last record, by sequence number, file and hash, and be signed
when a key is given. So:

- modification of a record: its signature fails (signed), or the next record's `prev_sha256` no longer
  matches it, or, for the last record, HEAD's hash does not;
- deletion: a gap in the sequence numbers; deleting the last record leaves HEAD pointing past the end;
- insertion: a duplicate sequence number, a broken chain (renumbered files), or a record past HEAD;
- reordering: the chain (each `prev_sha256` is inside the hashed and signed bytes) and the run_id in the
  file name.

What an attacker with write access to the directory can still do:

- Without signatures the chain is only as strong as HEAD: whoever rewrites a record, every record after
  it and HEAD (all hashes are public recipes) produces a ledger that verifies. Likewise deleting the last
  records and rewriting HEAD to the new end is a truncation nobody can see. Unsigned ledgers detect
  accidents and careless edits, not a deliberate forger.
- With signatures (the private key kept out of the attacker's reach; HEAD is signed too, its signature
  inside the HEAD file so HEAD and its signature are replaced in one atomic rename) the attacker cannot
  modify, insert, reorder or delete a record in the middle, nor move HEAD to a state that never existed.
  They can still roll the ledger back to an earlier genuine state: delete the last k records and put back
  a HEAD file copied when the ledger was k records shorter (old signed HEADs stay valid). They can also
  delete the whole directory. Only an anchor outside their reach detects that: the S3 Object Lock archive
  (`firedrill.audit.archive_s3`, which keeps every record and a HEAD snapshot per sequence number) or the HEAD
  hash published elsewhere (a report, a ticket).

An append writes the record, then its signature, then HEAD. A crash in between leaves a record past HEAD:
`verify` reports it and `append` refuses to extend the ledger until someone has looked (an interrupted
append and an inserted record look the same).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from firedrill.audit.signing import PublicKeyLike, Signer, load_public_key, verify_signature
from firedrill.audit.timestamps import parse_utc
from firedrill.errors import ConfigError, DeadlineExceeded, GuardrailError
from firedrill.evidence import EvidenceRecord, write_json_atomic

HEAD_NAME = "HEAD"
LOCK_NAME = ".lock"
HEAD_FORMAT = "firedrill-ledger-head/1"
RECORD_SUFFIX = ".json"
SIG_SUFFIX = ".sig"

_RECORD_RE = re.compile(r"^(\d{6,})-(.+)\.json$")
_SIG_RE = re.compile(r"^(\d{6,})-(.+)\.sig$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    seq: int
    record: EvidenceRecord  # as stored: prev_sha256 set
    sha256: str
    path: Path
    sig_path: Path | None


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    file: str
    sha256: str
    signature: bytes | None
    key_fingerprint: str | None

    def signed_bytes(self) -> bytes:
        """What the HEAD signature covers: format, sequence number, file name, hash and key fingerprint."""
        return _canonical(
            {
                "format": HEAD_FORMAT,
                "seq": self.seq,
                "file": self.file,
                "sha256": self.sha256,
                "key_fingerprint": self.key_fingerprint,
            }
        )


@dataclass(frozen=True, slots=True)
class BrokenLink:
    index: int  # sequence number of the record (0: a file that belongs to no record)
    file: str  # file name inside the ledger, "HEAD" for the anchor
    reason: str  # one line, e.g. "record 3 (000003-abc.json): prev_sha256 does not match record 2"

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records_checked: int  # records that passed every check before the first broken link
    first_break: BrokenLink | None
    signatures_checked: bool
    head_seq: int | None = None
    head_sha256: str | None = None

    def summary(self) -> str:
        if self.first_break is not None:
            return f"ledger BROKEN: {self.first_break.reason}"
        sigs = "signatures verified" if self.signatures_checked else "signatures NOT checked (no public key)"
        return f"ledger OK: {self.records_checked} records, chain and HEAD intact, {sigs}"


# ---------------------------------------------------------------------------------------------- append


def append(
    ledger_dir: Path, record: EvidenceRecord, signer: Signer | None = None, *, lock_timeout_s: float = 30.0
) -> LedgerEntry:
    """Append `record` (its `prev_sha256` is overwritten with the hash of the current last record).

    Holds an exclusive fcntl lock on `<ledger>/.lock` while it reads the tail and writes, so concurrent
    appenders (threads or processes on this host) serialize. Refuses (GuardrailError) to extend a ledger
    whose tail does not match HEAD, a duplicate run_id, an unsigned append to a signed ledger and a
    signing key other than the ledger's.
    """
    if not _RUN_ID_RE.match(record.run_id):
        raise ConfigError(
            f"run_id {record.run_id!r} cannot name a ledger file (letters, digits, '.', '_', '+', '-')"
        )
    ledger_dir = Path(ledger_dir)
    try:
        ledger_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create ledger directory {ledger_dir}: {exc.strerror}") from exc
    with _locked(ledger_dir, lock_timeout_s):
        listing = _scan(ledger_dir)
        head = read_head(ledger_dir)
        prev_sha = _check_tail(ledger_dir, listing, head)
        if any(run_id == record.run_id for _, run_id, _ in listing.records):
            raise GuardrailError(f"run {record.run_id} is already in the ledger {ledger_dir}")
        if head is not None and head.key_fingerprint is not None:
            if signer is None:
                raise GuardrailError(
                    f"ledger {ledger_dir} is signed (key {head.key_fingerprint}): "
                    "append needs the signing key"
                )
            if signer.fingerprint() != head.key_fingerprint:
                raise GuardrailError(
                    f"ledger {ledger_dir} is signed with key {head.key_fingerprint}, "
                    f"not {signer.fingerprint()}: refusing to mix keys"
                )
        seq = (head.seq if head is not None else 0) + 1
        stored = record.model_copy(update={"prev_sha256": prev_sha})
        canonical = stored.canonical_json().encode("utf-8")
        sha = stored.sha256()
        name = f"{seq:06d}-{record.run_id}{RECORD_SUFFIX}"
        path = ledger_dir / name
        write_json_atomic(path, canonical.decode("utf-8") + "\n")
        sig_path: Path | None = None
        head_sig: bytes | None = None
        key_fp: str | None = None
        if signer is not None:
            sig_path = ledger_dir / f"{seq:06d}-{record.run_id}{SIG_SUFFIX}"
            write_json_atomic(sig_path, base64.b64encode(signer.sign(canonical)).decode("ascii") + "\n")
            key_fp = signer.fingerprint()
        new_head = Head(seq=seq, file=name, sha256=sha, signature=None, key_fingerprint=key_fp)
        if signer is not None:
            head_sig = signer.sign(new_head.signed_bytes())
        _write_head(ledger_dir, Head(seq, name, sha, head_sig, key_fp))
        _fsync_dir(ledger_dir)
    return LedgerEntry(seq=seq, record=stored, sha256=sha, path=path, sig_path=sig_path)


# ---------------------------------------------------------------------------------------------- verify


def verify(ledger_dir: Path, public_key: PublicKeyLike | None = None) -> VerifyResult:
    """Check the whole ledger; stops at the first broken link (everything after it is unanchored).

    With `public_key`, every record and HEAD must carry a valid signature by that key. Without it, the
    chain and HEAD are checked and signatures are ignored (see the module docstring for what that misses).
    """
    ledger_dir = Path(ledger_dir)
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    key = load_public_key(public_key) if public_key is not None else None
    listing = _scan(ledger_dir)
    checked = 0
    head: Head | None = None
    head_error: str | None = None
    try:
        head = _read_head(ledger_dir)
    except _HeadError as exc:
        head_error = str(exc)

    def broken(index: int, file: str, why: str) -> VerifyResult:
        where = "HEAD" if file == HEAD_NAME else f"record {index} ({file})" if index else file
        return VerifyResult(
            ok=False,
            records_checked=checked,
            first_break=BrokenLink(index, file, f"{where}: {why}"),
            signatures_checked=key is not None,
            head_seq=head.seq if head is not None else None,
            head_sha256=head.sha256 if head is not None else None,
        )

    by_seq: dict[int, list[tuple[str, str]]] = {}
    for seq, run_id, name in listing.records:
        by_seq.setdefault(seq, []).append((run_id, name))
    last_seq = max(by_seq, default=0)
    prev_sha: str | None = None

    for seq in range(1, last_seq + 1):
        if head is not None and seq > head.seq:
            name = by_seq[seq][0][1] if seq in by_seq else f"{seq:06d}-*.json"
            return broken(
                seq,
                name,
                f"not covered by HEAD, which ends at record {head.seq} "
                "(inserted after the fact, or an interrupted append)",
            )
        entries = by_seq.get(seq)
        if not entries:
            following = min(s for s in by_seq if s > seq)
            expected = head.file if head is not None and head.seq == seq else f"{seq:06d}-*.json"
            return broken(seq, expected, f"missing (sequence numbers jump from {seq - 1} to {following})")
        if len(entries) > 1:
            names = ", ".join(sorted(n for _, n in entries))
            intruder = _intruder(ledger_dir, [n for _, n in entries], by_seq.get(seq + 1), head)
            return broken(seq, intruder, f"{len(entries)} files share sequence number {seq}: {names}")
        run_id, name = entries[0]
        path = ledger_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            return broken(seq, name, f"cannot be read: {exc.strerror}")
        try:
            record = EvidenceRecord.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "document"
            return broken(seq, name, f"not a valid evidence record: {loc}: {first['msg']}")
        # Hash and canonical form from the stored JSON itself, not from re-serialising it through
        # today's model: a field added to the schema later must not break yesterday's chain.
        canonical = _canonical(json.loads(data))
        if data != canonical + b"\n":
            return broken(seq, name, "not stored in canonical form (bytes changed after it was written)")
        if record.run_id != run_id:
            return broken(seq, name, f"run_id {record.run_id!r} does not match the file name")
        if seq == 1:
            if record.prev_sha256 is not None:
                return broken(seq, name, "first record has a prev_sha256 (records before it removed?)")
        elif record.prev_sha256 != prev_sha:
            return broken(seq, name, f"prev_sha256 does not match record {seq - 1}")
        if key is not None:
            sig_name = f"{seq:06d}-{run_id}{SIG_SUFFIX}"
            why = _check_sig(ledger_dir / sig_name, key, canonical)
            if why is not None:
                return broken(seq, name, why)
        sha = _sha(canonical)
        if head is not None and seq == head.seq and (sha != head.sha256 or name != head.file):
            return broken(
                seq, name, f"does not match HEAD (HEAD holds {head.file} with sha256 {head.sha256[:12]}...)"
            )
        prev_sha = sha
        checked += 1

    if head_error is not None:
        return broken(last_seq, HEAD_NAME, head_error)
    if head is None:
        if last_seq == 0:
            return _ok(checked, key is not None, None)
        return broken(last_seq, HEAD_NAME, "missing: the end of the ledger cannot be checked")
    if head.seq > last_seq:
        return broken(
            last_seq + 1,
            head.file if head.seq == last_seq + 1 else f"{last_seq + 1:06d}-*.json",
            f"missing: HEAD says the ledger ends at record {head.seq}, the last record present is {last_seq}",
        )
    if key is not None:
        if head.signature is None:
            return broken(head.seq, HEAD_NAME, "not signed")
        if not verify_signature(key, head.signed_bytes(), head.signature):
            return broken(head.seq, HEAD_NAME, "signature does not verify with the given public key")
    if listing.unexpected:
        return broken(0, listing.unexpected[0], "unexpected file in the ledger directory")
    record_stems = {n[: -len(RECORD_SUFFIX)] for _, _, n in listing.records}
    for seq, name in listing.sigs:
        if name[: -len(SIG_SUFFIX)] not in record_stems:
            return broken(seq, name, "signature file without a record")
    return _ok(checked, key is not None, head)


def _intruder(
    ledger_dir: Path, names: list[str], following: list[tuple[str, str]] | None, head: Head | None
) -> str:
    """Of several files sharing one sequence number, the one the chain does not continue from."""
    wanted: set[str] = set()
    for _, nxt in following or []:
        try:
            prev = EvidenceRecord.model_validate_json((ledger_dir / nxt).read_bytes()).prev_sha256
        except (ValidationError, OSError):
            continue
        if prev is not None:
            wanted.add(prev)
    if head is not None:
        wanted.add(head.sha256)
    for candidate in sorted(names):
        try:
            sha = _sha(_canonical(json.loads((ledger_dir / candidate).read_bytes())))
        except (ValueError, OSError):
            return candidate
        if sha not in wanted:
            return candidate
    return sorted(names)[0]


def _ok(checked: int, sigs: bool, head: Head | None) -> VerifyResult:
    return VerifyResult(
        ok=True,
        records_checked=checked,
        first_break=None,
        signatures_checked=sigs,
        head_seq=head.seq if head is not None else None,
        head_sha256=head.sha256 if head is not None else None,
    )


def _check_sig(sig_path: Path, key: PublicKeyLike, canonical: bytes) -> str | None:
    try:
        text = sig_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return f"not signed ({sig_path.name} missing)"
    except (OSError, UnicodeDecodeError) as exc:
        return f"signature {sig_path.name} cannot be read: {exc}"
    try:
        sig = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return f"signature {sig_path.name} is not base64"
    if not verify_signature(key, canonical, sig):
        return "signature does not verify with the given public key"
    return None


# ---------------------------------------------------------------------------------------------- reading


def iter_records(ledger_dir: Path) -> Iterator[EvidenceRecord]:
    """The records in sequence order. Reads only: call `verify` first to trust them."""
    ledger_dir = Path(ledger_dir)
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    for _seq, _run_id, name in sorted(_scan(ledger_dir).records):
        path = ledger_dir / name
        try:
            yield EvidenceRecord.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "document"
            raise ConfigError(f"{path} is not valid firedrill evidence: {loc}: {first['msg']}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read ledger record {path}: {exc.strerror}") from exc


def read_entries(ledger_dir: Path) -> tuple[list[LedgerEntry], list[str]]:
    """Every readable record in sequence order, and the file names of the unreadable ones.

    Reads only, and reads past a broken link: the caller states the ledger's verification result
    and marks the runs after the first break as unverified. (`iter_records` stops at the first
    unreadable record and gives no sequence numbers; the period report needs both.)
    """
    files = ledger_files(ledger_dir)
    sigs = {p.name for p in files if p.suffix == SIG_SUFFIX}
    entries: list[LedgerEntry] = []
    unreadable: list[str] = []
    for path in files:
        if path.suffix != RECORD_SUFFIX:
            continue
        seq = int(path.name.split("-", 1)[0])
        try:
            record = EvidenceRecord.model_validate_json(path.read_bytes())
        except (ValidationError, OSError):
            unreadable.append(path.name)
            continue
        sig = path.with_suffix(SIG_SUFFIX)
        entries.append(LedgerEntry(seq, record, record.sha256(), path, sig if sig.name in sigs else None))
    return entries, unreadable


def records_between(ledger_dir: Path, start: date, end: date) -> list[EvidenceRecord]:
    """Records whose `started_at` falls on a UTC date in [start, end], both inclusive, in ledger order."""
    if end < start:
        raise ConfigError(f"end date {end} is before start date {start}")
    return [r for r in iter_records(ledger_dir) if start <= parse_utc(r.started_at).date() <= end]


def read_head(ledger_dir: Path) -> Head | None:
    """The HEAD anchor, or None for a ledger without one. Raises GuardrailError when it is unreadable."""
    ledger_dir = Path(ledger_dir)
    try:
        return _read_head(ledger_dir)
    except _HeadError as exc:
        raise GuardrailError(f"ledger {ledger_dir}: HEAD {exc}") from exc


def ledger_files(ledger_dir: Path) -> list[Path]:
    """Record and signature files in sequence order (what an archive copies; HEAD not included)."""
    ledger_dir = Path(ledger_dir)
    listing = _scan(ledger_dir)
    names = [(seq, 0, n) for seq, _, n in listing.records] + [(seq, 1, n) for seq, n in listing.sigs]
    return [ledger_dir / n for _, _, n in sorted(names)]


# ---------------------------------------------------------------------------------------------- internals


@dataclass(slots=True)
class _Listing:
    records: list[tuple[int, str, str]]  # (seq, run_id, file name), sorted
    sigs: list[tuple[int, str]]  # (seq, file name)
    unexpected: list[str]


def _scan(ledger_dir: Path) -> _Listing:
    records: list[tuple[int, str, str]] = []
    sigs: list[tuple[int, str]] = []
    unexpected: list[str] = []
    try:
        names = sorted(os.listdir(ledger_dir))
    except OSError as exc:
        raise ConfigError(f"cannot list ledger directory {ledger_dir}: {exc.strerror}") from exc
    for name in names:
        if name.startswith(".") or name == HEAD_NAME:
            continue  # lock file, temp files of atomic writes
        if (m := _RECORD_RE.match(name)) and int(m.group(1)) > 0:
            records.append((int(m.group(1)), m.group(2), name))
        elif (m := _SIG_RE.match(name)) and int(m.group(1)) > 0:
            sigs.append((int(m.group(1)), name))
        else:
            unexpected.append(name)
    records.sort()
    sigs.sort()
    return _Listing(records, sigs, unexpected)


def _check_tail(ledger_dir: Path, listing: _Listing, head: Head | None) -> str | None:
    """The hash the next record must carry; GuardrailError unless the last record is the one HEAD names."""
    if not listing.records:
        if head is not None:
            raise GuardrailError(
                f"ledger {ledger_dir}: HEAD names {head.file} but there are no records: "
                "refusing to append (run verify)"
            )
        return None
    seq, _run_id, name = listing.records[-1]
    if head is None:
        raise GuardrailError(f"ledger {ledger_dir}: records present but HEAD is missing: refusing to append")
    if seq != head.seq or name != head.file:
        raise GuardrailError(
            f"ledger {ledger_dir}: last record is {name} but HEAD names {head.file}: "
            "refusing to append (run verify)"
        )
    try:
        last_sha = _sha(_canonical(json.loads((ledger_dir / name).read_bytes())))
    except (ValueError, OSError) as exc:
        raise GuardrailError(
            f"ledger {ledger_dir}: last record {name} is unreadable: refusing to append"
        ) from exc
    if last_sha != head.sha256:
        raise GuardrailError(
            f"ledger {ledger_dir}: last record {name} does not match HEAD's hash: "
            "refusing to append (run verify)"
        )
    return head.sha256


class _HeadError(ValueError):
    """HEAD exists but cannot be used; the message completes "HEAD ..."."""


def _read_head(ledger_dir: Path) -> Head | None:
    path = ledger_dir / HEAD_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _HeadError(f"cannot be read: {exc}") from exc
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != HEAD_FORMAT:
            raise ValueError("unknown format")
        seq, file, sha = doc["seq"], doc["file"], doc["sha256"]
        sig, fp = doc.get("signature"), doc.get("key_fingerprint")
        if not isinstance(seq, int) or seq < 1 or not isinstance(file, str) or not _RECORD_RE.match(file):
            raise ValueError("bad seq or file")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ValueError("bad sha256")
        if sig is not None and not isinstance(sig, str):
            raise ValueError("bad signature")
        if fp is not None and not isinstance(fp, str):
            raise ValueError("bad key_fingerprint")
        signature = base64.b64decode(sig, validate=True) if sig is not None else None
    except (ValueError, KeyError, binascii.Error) as exc:
        raise _HeadError(f"is not a valid ledger HEAD ({exc})") from exc
    return Head(seq=seq, file=file, sha256=sha, signature=signature, key_fingerprint=fp)


def _write_head(ledger_dir: Path, head: Head) -> None:
    doc = {
        "format": HEAD_FORMAT,
        "seq": head.seq,
        "file": head.file,
        "sha256": head.sha256,
        "signature": base64.b64encode(head.signature).decode("ascii") if head.signature else None,
        "key_fingerprint": head.key_fingerprint,
    }
    write_json_atomic(ledger_dir / HEAD_NAME, _canonical(doc).decode("utf-8") + "\n")


def _sha(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def _canonical(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


@contextmanager
def _locked(ledger_dir: Path, timeout_s: float) -> Iterator[None]:
    lock_path = ledger_dir / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open ledger lock {lock_path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(
                        f"ledger {ledger_dir} is locked by another appender for more than {timeout_s:g} s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "BrokenLink",
    "Head",
    "LedgerEntry",
    "VerifyResult",
    "append",
    "iter_records",
    "ledger_files",
    "read_head",
    "records_between",
    "verify",
]
