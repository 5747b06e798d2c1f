"""tlog-proof@v1, tlog-policy and the tlog-witness bodies (ledger/tlog): round trips, the
spec's examples, verification against a log key and a witness quorum, strictness, fuzzing and
tampering."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import (
    InferpayError,
    InvalidProof,
    MalformedNote,
    MalformedPolicy,
    MalformedTlogProof,
    MalformedWitnessRequest,
    QuorumNotMet,
    UnverifiedNote,
)
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import NoteSigner, NoteVerifier, parse_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from ledger.tlog.witness_protocol import (
    format_add_checkpoint,
    format_signature_lines,
    format_size_body,
    parse_add_checkpoint,
    parse_signature_lines,
    parse_size_body,
)
from tests.ledger.tlog_support import MemoryLog, seeded, witness
from tests.strategies import hashes32

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SPEC = json.loads((VECTORS / "c2sp-signed-note.json").read_text(encoding="utf-8"))["spec_examples"]


def a_log(count: int = 11) -> MemoryLog:
    log = MemoryLog()
    log.append(*(b"entry %d" % i for i in range(count)))
    return log


# ---- tlog-proof ----


def test_a_proof_round_trips_and_verifies_for_every_index() -> None:
    log = a_log(11)
    verifier = NoteVerifier.from_vkey(log.signer.vkey)
    for index in range(11):
        proof = log.proof(index)
        text = format_tlog_proof(proof)
        assert text.startswith(b"c2sp.org/tlog-proof@v1\nindex %d\n" % index)
        assert parse_tlog_proof(text) == proof
        checkpoint = verify_tlog_proof(parse_tlog_proof(text), log.entries[index], verifier, None)
        assert checkpoint == log.checkpoint()
        with pytest.raises(InvalidProof):
            verify_tlog_proof(proof, log.entries[(index + 1) % 11], verifier, None)
    extra = TlogProof(0, log.proof(0).inclusion, log.signed(), extra=b"\x00vrf")
    assert parse_tlog_proof(format_tlog_proof(extra)) == extra
    assert b"\nextra AHZyZg==\n" in format_tlog_proof(extra)


def test_proof_refusals() -> None:
    log = a_log(5)
    verifier = NoteVerifier.from_vkey(log.signer.vkey)
    good = log.proof(2)
    with pytest.raises(UnverifiedNote):
        verify_tlog_proof(good, log.entries[2], NoteVerifier.from_vkey(NoteSigner(log.origin, seeded("x")).vkey), None)
    beyond = TlogProof(5, good.inclusion, good.checkpoint)
    with pytest.raises(InvalidProof):
        verify_tlog_proof(beyond, b"entry 5", verifier, None)
    other_origin = MemoryLog(origin="elsewhere.test", entries=log.entries, signer=log.signer)
    with pytest.raises(UnverifiedNote, match="origin"):
        verify_tlog_proof(other_origin.proof(2), log.entries[2], verifier, None)
    for bad in [
        b"c2sp.org/tlog-proof@v2\nindex 0\n\n" + good.checkpoint,
        b"c2sp.org/tlog-proof@v1\nindex 01\n\n" + good.checkpoint,
        b"c2sp.org/tlog-proof@v1\nextra \nindex 0\n\n" + good.checkpoint,
        b"c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\n" + good.checkpoint,
        b"c2sp.org/tlog-proof@v1\nindex 0\n"
        + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64
        + b"\n"
        + good.checkpoint,
        b"c2sp.org/tlog-proof@v1\nindex 0\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n\nnot a note\n",
        b"c2sp.org/tlog-proof@v1\nindex 0\n\nnot\n3\nAAAA\n\n\xe2\x80\x94 k AAAAAAAA\n",
    ]:
        with pytest.raises(MalformedTlogProof):
            parse_tlog_proof(bad)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_byte_of_a_proof_is_refused(data: st.DataObject) -> None:
    log = a_log(9)
    index = data.draw(st.integers(0, 8))
    text = format_tlog_proof(log.proof(index))
    position = data.draw(st.integers(0, len(text) - 1))
    tampered = text[:position] + bytes([text[position] ^ data.draw(st.integers(1, 255))]) + text[position + 1 :]
    with pytest.raises((MalformedTlogProof, MalformedNote, UnverifiedNote, InvalidProof)):
        verify_tlog_proof(parse_tlog_proof(tampered), log.entries[index], NoteVerifier.from_vkey(log.signer.vkey), None)


@given(st.binary(max_size=400))
def test_parse_tlog_proof_on_garbage_raises_only_malformed_tlog_proof(data: bytes) -> None:
    try:
        proof = parse_tlog_proof(b"c2sp.org/tlog-proof@v1\n" + data)
    except MalformedTlogProof:
        return
    assert format_tlog_proof(proof) == b"c2sp.org/tlog-proof@v1\n" + data


# ---- tlog-policy ----


def spec_policy() -> tuple[str, dict[str, object]]:
    """The spec's two-level example with real keys."""
    log = a_log(3)
    ws = {name: witness(name) for name in ("X1", "X2", "X3", "Y1", "Y2", "Y3")}
    text = (
        f"# the example of c2sp.org/tlog-policy\nlog {log.signer.vkey} https://log.test/\n\n"
        + "".join(f"witness {n} {ws[n].vkey}\n" for n in ("X1", "X2", "X3"))
        + "group X-witnesses 2 X1 X2 X3\n\n"
        + "".join(f"\twitness  {n}\t{ws[n].vkey}  \n" for n in ("Y1", "Y2", "Y3"))
        + "group Y-witnesses any Y1 Y2 Y3\n\ngroup X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n"
    )
    return text, {"log": log, **ws}


def test_the_specs_example_policy_quorum() -> None:
    text, parts = spec_policy()
    policy = parse_policy(text)
    log = parts["log"]
    assert isinstance(log, MemoryLog)
    ws = {k: v for k, v in parts.items() if k != "log"}
    assert [v.vkey for v in policy.log_verifiers] == [log.signer.vkey]
    assert policy.logs[0].url == "https://log.test/"
    checkpoint = log.checkpoint()
    policy.check(log.signed(None, ws["X1"], ws["X3"], ws["Y2"]), checkpoint)  # type: ignore[arg-type]
    assert set(policy.cosigners(log.signed(None, ws["X1"], ws["Y2"]), checkpoint)) == {"X1", "Y2"}  # type: ignore[arg-type]
    with pytest.raises(QuorumNotMet) as caught:
        policy.check(log.signed(None, ws["X1"], ws["Y1"], ws["Y2"]), checkpoint)  # type: ignore[arg-type]
    assert caught.value.details["missing"] == ["X2", "X3", "Y3"]
    with pytest.raises(QuorumNotMet):
        policy.check(log.signed(None, ws["X1"], ws["X2"]), checkpoint)  # type: ignore[arg-type]
    # Cosignatures from witnesses the policy does not list do not count.
    outsiders = [witness(f"other{i}") for i in range(5)]
    with pytest.raises(QuorumNotMet):
        policy.check(log.signed(None, *outsiders), checkpoint)
    # A policy log must have signed it, under the checkpoint's origin.
    stranger = MemoryLog(entries=log.entries, signer=NoteSigner(log.origin, seeded("stranger")))
    with pytest.raises(UnverifiedNote):
        policy.check(stranger.signed(None, ws["X1"], ws["X2"], ws["Y1"]), checkpoint)  # type: ignore[arg-type]
    with pytest.raises(UnverifiedNote):
        policy.check(log.signed(None), log.checkpoint(2))


def test_a_bad_cosignature_from_a_listed_witness_refuses_the_note() -> None:
    log, w = a_log(3), witness("solo")
    policy = parse_policy(f"log {log.signer.vkey}\nwitness solo {w.vkey}\nquorum solo\n")
    good = log.signed(None, w)
    policy.check(good, log.checkpoint())
    note = parse_note(good)
    forged = bytearray(note.signatures[1].signature)
    forged[-1] ^= 1
    lines = good.decode().splitlines(keepends=True)
    bad_line = type(note.signatures[1])(note.signatures[1].name, note.signatures[1].key_id, bytes(forged)).line()
    with pytest.raises(UnverifiedNote, match="solo"):
        policy.check("".join(lines[:-1]).encode() + bad_line.encode() + b"\n", log.checkpoint())


def test_quorum_none_and_numeric_thresholds() -> None:
    log = a_log(2)
    assert parse_policy("quorum none").logs == ()
    parse_policy(f"log {log.signer.vkey}\nquorum none\n").check(log.signed(), log.checkpoint())
    ws = [witness(f"t{i}") for i in range(4)]
    text = "".join(f"witness t{i} {w.vkey}\n" for i, w in enumerate(ws)) + "group g 3 t0 t1 t2 t3\nquorum g\n"
    policy = parse_policy(text)
    policy.check(log.signed(None, ws[0], ws[2], ws[3]), log.checkpoint())
    with pytest.raises(QuorumNotMet):
        policy.check(log.signed(None, ws[0], ws[2]), log.checkpoint())
    single = parse_policy(f"witness only {ws[0].vkey}\nquorum only\n")
    single.check(log.signed(None, ws[0]), log.checkpoint())


@pytest.mark.parametrize(
    "make",
    [
        lambda k: "log x\nquorum none\n",
        lambda k: f"witness a {k['a']}\nquorum b\n",  # undefined quorum
        lambda k: f"witness a {k['a']}\n",  # no quorum
        lambda k: f"witness a {k['a']}\nquorum a\nquorum a\n",
        lambda k: f"witness a {k['a']}\nwitness a {k['b']}\nquorum a\n",  # a name twice
        lambda k: f"witness a {k['a']}\nwitness b {k['a']}\nquorum a\n",  # a key twice
        lambda k: f"log {k['log']}\nlog {k['log']}\nquorum none\n",
        lambda k: f"witness none {k['a']}\nquorum none\n",
        lambda k: f"witness a {k['a']}\ngroup g any a none\nquorum g\n",
        lambda k: f"witness a {k['a']}\ngroup g any a a\nquorum g\n",
        lambda k: f"witness a {k['a']}\ngroup g 0 a\nquorum g\n",
        lambda k: f"witness a {k['a']}\ngroup g 2 a\nquorum g\n",
        lambda k: f"witness a {k['a']}\ngroup g 01 a\nquorum g\n",
        lambda k: f"witness a {k['a']}\ngroup g any\nquorum g\n",
        lambda k: f"group g any a\nwitness a {k['a']}\nquorum g\n",  # a member defined later
        lambda k: f"witness a {k['log']}\nquorum a\n",  # a note key where a cosignature key belongs
        lambda k: f"log {k['a']}\nquorum none\n",
        lambda k: f"witness a {k['a']}\r\nquorum a\n",
        lambda k: f"witness a {k['a']}\nquorum a extra\n",
        lambda k: "lag x\nquorum none\n",
        lambda k: "quorum none\n\x7f\n",
    ],
)
def test_policy_parser_refusals(make: object) -> None:
    keys = {"a": witness("a").vkey, "b": witness("b").vkey, "log": a_log(1).signer.vkey}
    with pytest.raises(MalformedPolicy):
        parse_policy(make(keys))  # type: ignore[operator]


@given(st.binary(max_size=300))
def test_parse_policy_on_garbage_raises_only_malformed_policy(data: bytes) -> None:
    with contextlib.suppress(MalformedPolicy):
        parse_policy(data)


def test_verify_tlog_proof_with_a_policy() -> None:
    log, ws = a_log(6), [witness("p0"), witness("p1")]
    policy = parse_policy("".join(f"witness p{i} {w.vkey}\n" for i, w in enumerate(ws)) + "group g all p0 p1\nquorum g")
    verifier = NoteVerifier.from_vkey(log.signer.vkey)
    assert verify_tlog_proof(log.proof(4, None, *ws), log.entries[4], verifier, policy).size == 6
    with pytest.raises(QuorumNotMet) as caught:
        verify_tlog_proof(log.proof(4, None, ws[0]), log.entries[4], verifier, policy)
    assert caught.value.details["missing"] == ["p1"]


# ---- tlog-witness bodies ----


def test_the_specs_add_checkpoint_example_parses() -> None:
    example = SPEC["add_checkpoint_request"]
    request = parse_add_checkpoint(example["body"].encode())
    assert request.old_size == example["old_size"] and len(request.consistency) == example["proof_lines"]
    assert request.checkpoint.size == example["size"] and len(request.note.signatures) == 2
    assert (
        format_add_checkpoint(request.old_size, request.consistency, request.signed_checkpoint)
        == example["body"].encode()
    )


@given(st.integers(0, (1 << 63) - 1), st.lists(hashes32, max_size=63))
def test_add_checkpoint_round_trips(old_size: int, proof: list[bytes]) -> None:
    signed = a_log(3).signed()
    request = parse_add_checkpoint(format_add_checkpoint(old_size, proof, signed))
    assert (request.old_size, list(request.consistency), request.signed_checkpoint) == (old_size, proof, signed)
    assert request.checkpoint == parse_checkpoint(parse_note(signed).text)


def test_add_checkpoint_refusals() -> None:
    signed = a_log(3).signed()
    for bad in [
        b"old 01\n\n" + signed,
        b"old -1\n\n" + signed,
        b"old 1\n" + signed,
        b"old 1\nAAAA\n\n" + signed,
        b"old 1\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + signed,
        b"new 1\n\n" + signed,
        b"old 1\n\nnot a checkpoint\n\n\xe2\x80\x94 k AAAAAAAA\n",
        b"old 1\n\n" + signed[:-1],
    ]:
        with pytest.raises(MalformedWitnessRequest):
            parse_add_checkpoint(bad)
    with pytest.raises(MalformedWitnessRequest):
        format_add_checkpoint(0, [b"\x00" * 32] * 64, signed)


@given(st.binary(max_size=400))
def test_parse_add_checkpoint_on_garbage_raises_only_malformed_witness_request(data: bytes) -> None:
    with contextlib.suppress(MalformedWitnessRequest):
        parse_add_checkpoint(b"old 3\n" + data)


def test_answer_bodies() -> None:
    log, w = a_log(2), witness("ans")
    sigs = [w.cosign(log.checkpoint().body(), 5), w.cosign(log.checkpoint().body(), 6)]
    body = format_signature_lines(sigs)
    assert parse_signature_lines(body) == sigs
    assert parse_size_body(format_size_body(20852014)) == 20852014
    for bad in (b"", b"\n", body[:-1], b"- x AAAAAAAA\n"):
        with pytest.raises(MalformedWitnessRequest):
            parse_signature_lines(bad)
    for bad in (b"12", b"012\n", b"-1\n", b"1 \n", b""):
        with pytest.raises(MalformedWitnessRequest):
            parse_size_body(bad)


@given(st.binary(max_size=200))
def test_answer_parsers_on_garbage_raise_only_malformed_witness_request(data: bytes) -> None:
    for parse in (parse_signature_lines, parse_size_body):
        with contextlib.suppress(MalformedWitnessRequest):
            parse(data)


def test_errors_are_in_the_tree() -> None:
    for error in (MalformedPolicy, MalformedTlogProof, MalformedWitnessRequest, QuorumNotMet, InvalidProof):
        assert issubclass(error, InferpayError)
