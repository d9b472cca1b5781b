"""The evidence ledger: hash chain + HEAD anchor + Ed25519 signatures, and every kind of tampering."""

from __future__ import annotations

import base64
import itertools
import json
import multiprocessing
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firedrill.audit import ledger
from firedrill.audit.signing import Signer, fingerprint, generate_key, load_public_key, verify_signature
from firedrill.errors import ConfigError, GuardrailError
from firedrill.evidence import (
    Check,
    Environment,
    EvidenceRecord,
    Measurements,
    Objective,
    ObjectiveVerdict,
    Operator,
    Verdict,
    load_evidence,
)


def make_record(
    run_id: str,
    *,
    started_at: str = "2027-01-04T09:00:00+00:00",
    drill: str = "pg-failover",
    verdict: Verdict = "passed",
    rto_s: float = 12.5,
) -> EvidenceRecord:
    return EvidenceRecord(
        run_id=run_id,
        drill=drill,
        scenario="primary killed",
        fault="kill -9 primary",
        started_at=started_at,
        finished_at=started_at.replace("09:00:00", "09:03:00"),
        duration_s=180.0,
        environment=Environment(
            name="local",
            kind="local-staging",
            host="ci-1",
            platform="Linux",
            python="3.11.2",
            firedrill_version="0.1.0",
            git_revision="c5575cb",
        ),
        operator=Operator(user="ci", host="ci-1", via="pytest"),
        objectives=[Objective(name="rto", limit=900.0, unit="s", description="recover within 15 min")],
        verdicts=[ObjectiveVerdict(objective="rto", limit=900.0, unit="s", measured=rto_s, met=rto_s <= 900)],
        checks=[Check(name="no acknowledged write lost", passed=True)],
        measurements=Measurements(rto_s=rto_s, rpo_window_s=0.0, lost_writes=0, lost_seqs=[], extra={"n": 3}),
        verdict=verdict,
        timeline=[],
        samples=[],
        signoff=[],
        compliance=[],
    )


RUN_IDS = [f"2027010{i}T0900Z-pg-failover-{i:04d}" for i in range(1, 6)]


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def signed_ledger(tmp_path: Path, signer: Signer) -> tuple[Path, list[ledger.LedgerEntry]]:
    d = tmp_path / "ledger"
    entries = [
        ledger.append(d, make_record(r, started_at=f"2027-0{i + 1}-04T09:00:00+00:00"), signer)
        for i, r in enumerate(RUN_IDS)
    ]
    return d, entries


@pytest.fixture
def plain_ledger(tmp_path: Path) -> tuple[Path, list[ledger.LedgerEntry]]:
    d = tmp_path / "plain"
    return d, [ledger.append(d, make_record(r), None) for r in RUN_IDS]


def name(seq: int) -> str:
    return f"{seq:06d}-{RUN_IDS[seq - 1]}.json"


def sig(seq: int) -> str:
    return f"{seq:06d}-{RUN_IDS[seq - 1]}.sig"


def assert_break(result: ledger.VerifyResult, index: int, file: str, words: str) -> None:
    assert not result.ok, result.summary()
    assert result.first_break is not None
    assert (result.first_break.index, result.first_break.file) == (index, file), result.first_break.reason
    assert words in result.first_break.reason, result.first_break.reason
    assert "\n" not in result.first_break.reason


# ------------------------------------------------------------------------------------- append + verify


def test_append_builds_a_hash_chain_with_head(signed_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, entries = signed_ledger
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].record.prev_sha256 is None
    for before, after in itertools.pairwise(entries):
        assert after.record.prev_sha256 == before.sha256
    for e in entries:
        assert e.path.name == name(e.seq)
        assert e.path.read_bytes() == e.record.canonical_json().encode() + b"\n"
        assert e.sha256 == e.record.sha256()
        assert e.sig_path is not None and e.sig_path.exists()
        assert load_evidence(e.path) == e.record  # a ledger file is a normal evidence file
    head = ledger.read_head(d)
    assert head is not None
    assert (head.seq, head.file, head.sha256) == (5, name(5), entries[-1].sha256)
    assert [r.run_id for r in ledger.iter_records(d)] == RUN_IDS


def test_verify_passes_with_public_key_in_every_form(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, _ = signed_ledger
    raw_b64 = base64.b64encode(signer.public_key_raw()).decode()
    for key in (signer.public_key(), signer.public_key_pem(), signer.public_key_pem().encode(), raw_b64):
        result = ledger.verify(d, key)
        assert result.ok, result.summary()
        assert result.records_checked == 5
        assert result.signatures_checked
        assert result.head_seq == 5
    unsigned_check = ledger.verify(d)
    assert unsigned_check.ok and not unsigned_check.signatures_checked
    assert "NOT checked" in unsigned_check.summary()


def test_empty_ledger_verifies(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = ledger.verify(tmp_path / "empty")
    assert result.ok and result.records_checked == 0


def test_verify_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ledger.verify(tmp_path / "nope")


# ------------------------------------------------------------------------------------- tampering


def flip_drill_letter(path: Path) -> None:
    """Change one byte inside a string value: still valid, canonical JSON, just a different record."""
    data = path.read_bytes()
    i = data.index(b'"drill":"pg-failover"') + len(b'"drill":"pg-failove')
    path.write_bytes(data[:i] + b"X" + data[i + 1 :])


def test_modified_middle_record_signed(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, _ = signed_ledger
    flip_drill_letter(d / name(3))
    assert_break(ledger.verify(d, signer.public_key_pem()), 3, name(3), "signature does not verify")
    assert ledger.verify(d, signer.public_key_pem()).records_checked == 2


def test_modified_middle_record_unsigned_is_caught_by_the_next_link(
    plain_ledger: tuple[Path, list[ledger.LedgerEntry]],
) -> None:
    d, _ = plain_ledger
    flip_drill_letter(d / name(3))
    assert_break(ledger.verify(d), 4, name(4), f"record 4 ({name(4)}): prev_sha256 does not match record 3")


def test_modified_byte_breaking_canonical_form(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    data = (d / name(2)).read_bytes()
    (d / name(2)).write_bytes(data.replace(b'"verdict":"passed"', b'"verdict": "passed"'))
    assert_break(ledger.verify(d), 2, name(2), "not stored in canonical form")


def test_modified_byte_breaking_json(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    data = bytearray((d / name(2)).read_bytes())
    data[0] = ord("[")
    (d / name(2)).write_bytes(bytes(data))
    assert_break(ledger.verify(d), 2, name(2), "not a valid evidence record")


def test_modified_last_record_caught_by_head(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    flip_drill_letter(d / name(5))
    assert_break(ledger.verify(d), 5, name(5), "does not match HEAD")


def test_deleted_middle_record(signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer) -> None:
    d, _ = signed_ledger
    (d / name(3)).unlink()
    (d / sig(3)).unlink()
    for key in (None, signer.public_key()):
        assert_break(ledger.verify(d, key), 3, "000003-*.json", "missing (sequence numbers jump from 2 to 4)")


def test_deleted_middle_record_with_renumbering(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    (d / name(3)).unlink()
    (d / name(4)).rename(d / f"000003-{RUN_IDS[3]}.json")
    (d / name(5)).rename(d / f"000004-{RUN_IDS[4]}.json")
    assert_break(ledger.verify(d), 3, f"000003-{RUN_IDS[3]}.json", "prev_sha256 does not match record 2")


def test_deleted_last_record(signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer) -> None:
    d, _ = signed_ledger
    (d / name(5)).unlink()
    (d / sig(5)).unlink()
    for key in (None, signer.public_key()):
        result = ledger.verify(d, key)
        assert_break(
            result, 5, name(5), "HEAD says the ledger ends at record 5, the last record present is 4"
        )
        assert result.records_checked == 4


def test_deleted_last_record_with_forged_head(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    """The documented limit: unsigned, a rewritten HEAD hides the truncation; signed, it does not."""
    d, entries = signed_ledger
    (d / name(5)).unlink()
    (d / sig(5)).unlink()
    head = json.loads((d / "HEAD").read_text())
    head.update(seq=4, file=name(4), sha256=entries[3].sha256)
    (d / "HEAD").write_text(json.dumps(head))
    assert ledger.verify(d).ok  # without signatures nothing can tell
    assert_break(ledger.verify(d, signer.public_key()), 4, "HEAD", "signature does not verify")


def test_rollback_to_an_old_signed_head_is_the_documented_limit(tmp_path: Path, signer: Signer) -> None:
    d = tmp_path / "l"
    for r in RUN_IDS[:4]:
        ledger.append(d, make_record(r), signer)
    old_head = (d / "HEAD").read_bytes()
    ledger.append(d, make_record(RUN_IDS[4]), signer)
    (d / name(5)).unlink()
    (d / sig(5)).unlink()
    (d / "HEAD").write_bytes(old_head)
    # Needs an external anchor (S3 Object Lock archive of HEAD snapshots) to be detected.
    assert ledger.verify(d, signer.public_key()).ok


def forge(prev_sha: str | None, run_id: str = "forged-0001") -> EvidenceRecord:
    return make_record(run_id, verdict="passed", rto_s=1.0).model_copy(update={"prev_sha256": prev_sha})


def test_inserted_forged_record_with_renumbering(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, entries = signed_ledger
    for seq in (5, 4, 3):  # make room at 3, as a careful forger would
        (d / name(seq)).rename(d / f"{seq + 1:06d}-{RUN_IDS[seq - 1]}.json")
        (d / sig(seq)).rename(d / f"{seq + 1:06d}-{RUN_IDS[seq - 1]}.sig")
    forged = forge(entries[1].sha256)
    (d / "000003-forged-0001.json").write_text(forged.canonical_json() + "\n")
    # Unsigned: the chain still breaks right after the forged record.
    assert_break(ledger.verify(d), 4, f"000004-{RUN_IDS[2]}.json", "prev_sha256 does not match record 3")
    # Signed: the forged record itself has no signature.
    assert_break(ledger.verify(d, signer.public_key()), 3, "000003-forged-0001.json", "not signed")
    # Signed by the forger's own key: still not ours.
    attacker = Signer(Ed25519PrivateKey.generate())
    sig_b64 = base64.b64encode(attacker.sign(forged.canonical_json().encode())).decode()
    (d / "000003-forged-0001.sig").write_text(sig_b64 + "\n")
    assert_break(
        ledger.verify(d, signer.public_key()), 3, "000003-forged-0001.json", "signature does not verify"
    )


def test_inserted_record_with_duplicate_sequence_number(
    plain_ledger: tuple[Path, list[ledger.LedgerEntry]],
) -> None:
    d, entries = plain_ledger
    (d / "000003-forged-0001.json").write_text(forge(entries[1].sha256).canonical_json() + "\n")
    assert_break(ledger.verify(d), 3, "000003-forged-0001.json", "2 files share sequence number 3")


def test_inserted_record_after_head(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, entries = plain_ledger
    (d / "000006-forged-0001.json").write_text(forge(entries[4].sha256).canonical_json() + "\n")
    result = ledger.verify(d)
    assert_break(result, 6, "000006-forged-0001.json", "not covered by HEAD, which ends at record 5")
    assert result.records_checked == 5
    with pytest.raises(GuardrailError, match="refusing to append"):
        ledger.append(d, make_record("next-0001"), None)


def test_swapped_records_by_renaming(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, _ = signed_ledger
    a3, a4 = f"000003-{RUN_IDS[3]}", f"000004-{RUN_IDS[2]}"
    (d / name(3)).rename(d / f"{a4}.json")
    (d / sig(3)).rename(d / f"{a4}.sig")
    (d / name(4)).rename(d / f"{a3}.json")
    (d / sig(4)).rename(d / f"{a3}.sig")
    for key in (None, signer.public_key()):
        assert_break(ledger.verify(d, key), 3, f"{a3}.json", "prev_sha256 does not match record 2")


def test_swapped_record_contents(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    b3, b4 = (d / name(3)).read_bytes(), (d / name(4)).read_bytes()
    (d / name(3)).write_bytes(b4)
    (d / name(4)).write_bytes(b3)
    assert_break(ledger.verify(d), 3, name(3), "does not match the file name")


def test_modified_record_resigned_with_the_wrong_key(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, _ = signed_ledger
    flip_drill_letter(d / name(2))
    attacker = Signer(Ed25519PrivateKey.generate())
    (d / sig(2)).write_text(
        base64.b64encode(attacker.sign((d / name(2)).read_bytes().rstrip(b"\n"))).decode()
    )
    assert_break(ledger.verify(d, signer.public_key()), 2, name(2), "signature does not verify")


def test_whole_ledger_rewritten_with_another_key(tmp_path: Path, signer: Signer) -> None:
    """A forger who rebuilds every record, signature and HEAD with their own key is caught at record 1."""
    attacker = Signer(Ed25519PrivateKey.generate())
    d = tmp_path / "forged"
    for r in RUN_IDS:
        ledger.append(d, make_record(r, rto_s=0.5), attacker)
    assert ledger.verify(d, attacker.public_key()).ok
    assert_break(ledger.verify(d, signer.public_key()), 1, name(1), "signature does not verify")


def test_missing_signature_and_unsigned_ledger(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]],
    plain_ledger: tuple[Path, list[ledger.LedgerEntry]],
    signer: Signer,
) -> None:
    d, _ = signed_ledger
    (d / sig(4)).unlink()
    assert_break(ledger.verify(d, signer.public_key()), 4, name(4), "not signed")
    p, _ = plain_ledger
    assert_break(ledger.verify(p, signer.public_key()), 1, name(1), "not signed")


def test_first_record_with_prev_hash_and_stray_files(
    plain_ledger: tuple[Path, list[ledger.LedgerEntry]],
) -> None:
    d, _ = plain_ledger
    (d / "notes.txt").write_text("hello")
    assert_break(ledger.verify(d), 0, "notes.txt", "unexpected file")
    (d / "notes.txt").unlink()
    (d / "000000-before-all.json").write_text(forge(None).canonical_json() + "\n")
    assert_break(ledger.verify(d), 0, "000000-before-all.json", "unexpected file")
    (d / "000000-before-all.json").unlink()
    (d / "000009-gone.sig").write_text("AAAA")
    assert_break(ledger.verify(d), 9, "000009-gone.sig", "signature file without a record")
    (d / "000009-gone.sig").unlink()
    # Dropping the first record and renumbering leaves a "first" record that points to something.
    (d / name(1)).unlink()
    for seq in range(2, 6):
        (d / name(seq)).rename(d / f"{seq - 1:06d}-{RUN_IDS[seq - 1]}.json")
    assert_break(ledger.verify(d), 1, f"000001-{RUN_IDS[1]}.json", "first record has a prev_sha256")


def test_head_missing_or_garbage(plain_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = plain_ledger
    head = (d / "HEAD").read_bytes()
    (d / "HEAD").unlink()
    assert_break(ledger.verify(d), 5, "HEAD", "missing")
    with pytest.raises(GuardrailError, match="HEAD is missing"):
        ledger.append(d, make_record("next-0001"), None)
    (d / "HEAD").write_text("{not json")
    assert_break(ledger.verify(d), 5, "HEAD", "not a valid ledger HEAD")
    with pytest.raises(GuardrailError, match="not a valid ledger HEAD"):
        ledger.append(d, make_record("next-0001"), None)
    (d / "HEAD").write_bytes(head)
    assert ledger.verify(d).ok


# ------------------------------------------------------------------------------------- append guardrails


def test_append_refuses_after_last_record_deleted(
    plain_ledger: tuple[Path, list[ledger.LedgerEntry]],
) -> None:
    d, _ = plain_ledger
    (d / name(5)).unlink()
    with pytest.raises(GuardrailError, match="HEAD names"):
        ledger.append(d, make_record("next-0001"), None)  # would otherwise hide the deletion


def test_append_refuses_duplicates_bad_ids_and_key_mixing(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]], signer: Signer
) -> None:
    d, _ = signed_ledger
    with pytest.raises(GuardrailError, match="already in the ledger"):
        ledger.append(d, make_record(RUN_IDS[0]), signer)
    with pytest.raises(GuardrailError, match="append needs the signing key"):
        ledger.append(d, make_record("next-0001"), None)
    with pytest.raises(GuardrailError, match="refusing to mix keys"):
        ledger.append(d, make_record("next-0001"), Signer(Ed25519PrivateKey.generate()))
    with pytest.raises(ConfigError, match="cannot name a ledger file"):
        ledger.append(d, make_record("../escape"), signer)
    entry = ledger.append(d, make_record("next-0001"), signer)
    assert entry.seq == 6
    assert ledger.verify(d, signer.public_key()).ok


def _append_many(ledger_dir: str, worker: int, count: int) -> list[int]:
    return [
        ledger.append(Path(ledger_dir), make_record(f"w{worker}-{i:03d}"), None).seq for i in range(count)
    ]


def test_concurrent_appenders_do_not_fork_the_chain(tmp_path: Path) -> None:
    d = tmp_path / "busy"
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_append_many, str(d), w, 10) for w in range(4)]
        seqs = sorted(s for f in futures for s in f.result())
    assert seqs == list(range(1, 41))
    result = ledger.verify(d)
    assert result.ok, result.summary()
    assert result.records_checked == 40


# ------------------------------------------------------------------------------------- reading


def test_records_between_dates(signed_ledger: tuple[Path, list[ledger.LedgerEntry]]) -> None:
    d, _ = signed_ledger  # started 2027-01-04, 02-04, 03-04, 04-04, 05-04
    got = ledger.records_between(d, date(2027, 2, 4), date(2027, 4, 4))
    assert [r.run_id for r in got] == RUN_IDS[1:4]
    assert all(r.prev_sha256 for r in got)
    assert ledger.records_between(d, date(2026, 1, 1), date(2026, 12, 31)) == []
    with pytest.raises(ConfigError, match="before start date"):
        ledger.records_between(d, date(2027, 5, 1), date(2027, 1, 1))


def test_ledger_files_lists_records_and_signatures(
    signed_ledger: tuple[Path, list[ledger.LedgerEntry]],
) -> None:
    d, _ = signed_ledger
    assert [p.name for p in ledger.ledger_files(d)] == [n for s in range(1, 6) for n in (name(s), sig(s))]


# ------------------------------------------------------------------------------------- signing


PEM_HEADER = "-----BEGIN PRIVATE KEY-----"


def test_generate_key_mode_0600_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.pem"
    old_umask = os.umask(0)
    try:
        s = generate_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(PEM_HEADER)
    again = Signer.from_file(path)
    assert again.fingerprint() == s.fingerprint()
    assert again.public_key_pem() == s.public_key_pem()
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(path)


def test_signer_from_env_raw_base64_and_escaped_pem(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv("FD_KEY_RAW", base64.b64encode(raw).decode())
    monkeypatch.setenv("FD_KEY_PEM", pem.replace("\n", "\\n"))
    a, b = Signer.from_env("FD_KEY_RAW"), Signer.from_env("FD_KEY_PEM")
    assert a.fingerprint() == b.fingerprint() == fingerprint(key.public_key())
    assert b.source == "$FD_KEY_PEM"
    sig_bytes = a.sign(b"data")
    assert verify_signature(b.public_key_pem(), b"data", sig_bytes)
    assert not verify_signature(b.public_key_pem(), b"dat4", sig_bytes)
    assert base64.b64encode(raw).decode() not in repr(a)


def test_fingerprint_is_grouped_sha256_of_raw_public_key(signer: Signer) -> None:
    import hashlib

    fp = signer.fingerprint()
    groups = fp.split(":")
    assert len(groups) == 16 and all(len(g) == 4 for g in groups)
    assert fp.replace(":", "") == hashlib.sha256(signer.public_key_raw()).hexdigest()
    assert fingerprint(signer.public_key_pem()) == fp


def test_bad_keys_are_one_line_config_errors_without_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secretish = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLW5vdC0zMg=="
    monkeypatch.setenv("FD_BAD", secretish)
    with pytest.raises(ConfigError) as err:
        Signer.from_env("FD_BAD")
    assert secretish not in str(err.value) and "FD_BAD" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not set"):
        Signer.from_env("FD_UNSET_VARIABLE_X")
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text(PEM_HEADER + "\nAAAAsecretAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as err2:
        Signer.from_file(bad_pem)
    assert "AAAAsecretAAAA" not in str(err2.value) and "\n" not in str(err2.value)
    with pytest.raises(ConfigError, match="not found"):
        Signer.from_file(tmp_path / "missing.pem")
    with pytest.raises(ConfigError):
        load_public_key("not a key")


def test_records_written_by_an_older_schema_still_verify_and_extend(tmp_path: Path) -> None:
    """A field added to the evidence schema later (with a default) must not break the chain of
    records written before it: hashes come from the stored bytes, not from re-serialising them."""
    d = tmp_path / "ledger"
    d.mkdir()
    old = make_record(RUN_IDS[0]).model_dump(mode="json")
    for check in old["checks"]:
        del check["blocking"]  # as written before Check.blocking existed
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":")).encode()
    (d / name(1)).write_bytes(canonical + b"\n")
    import hashlib

    sha = hashlib.sha256(canonical).hexdigest()
    ledger._write_head(d, ledger.Head(1, name(1), sha, None, None))
    assert ledger.verify(d).ok
    entry = ledger.append(d, make_record(RUN_IDS[1]))
    assert entry.record.prev_sha256 == sha
    result = ledger.verify(d)
    assert result.ok and result.records_checked == 2
