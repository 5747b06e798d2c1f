"""Signed notes, checkpoints and cosignatures (ledger/tlog): Go's and C2SP's known answers byte
for byte, round trips, strictness, fuzzing (nothing but our errors on garbage) and tampering
(any flipped byte is refused)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InferpayError, MalformedCheckpoint, MalformedKey, MalformedNote, UnverifiedNote
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.cosignature import CosignatureSigner, CosignatureVerifier
from ledger.tlog.note import (
    Note,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    format_note,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from tests.ledger.tlog_support import MemoryLog, seeded, witness
from tests.strategies import hashes32, key_names, note_lines, note_texts, tree_sizes

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
GO = json.loads((VECTORS / "c2sp-signed-note.json").read_text(encoding="utf-8"))
COSIG = json.loads((VECTORS / "c2sp-cosignature-v1.json").read_text(encoding="utf-8"))
PETER, ENOCH = GO["keys"]
TEXT = GO["text"].encode()


# ---- known answers ----


def test_go_skey_gives_go_vkey_key_id_and_signed_note_byte_for_byte() -> None:
    signer = NoteSigner.from_skey(PETER["skey"])
    assert (signer.name, signer.key_id.hex(), signer.vkey, signer.skey) == (
        PETER["name"],
        PETER["key_id"],
        PETER["vkey"],
        PETER["skey"],
    )
    assert sign_note(TEXT, signer) == GO["signed_by_peter"].encode()
    verifier = NoteVerifier.from_vkey(PETER["vkey"])
    assert verifier.key_id == key_id("PeterNeumann", 0x01, verifier.public_key) == bytes.fromhex("c74f20a3")


def test_go_open_vectors_one_known_key_two_known_keys_none_known() -> None:
    peter, enoch = NoteVerifier.from_vkey(PETER["vkey"]), NoteVerifier.from_vkey(ENOCH["vkey"])
    both = TEXT + b"\n" + (GO["signature_lines"]["PeterNeumann"] + GO["signature_lines"]["EnochRoot"]).encode()
    only_peter = open_note(both, [peter])
    assert only_peter.text == TEXT
    assert [(s.name, s.key_id.hex()) for s in only_peter.signatures] == [("PeterNeumann", "c74f20a3")]
    assert [s.name for s in open_note(both, [peter, enoch]).signatures] == ["PeterNeumann", "EnochRoot"]
    for name, want in GO["signatures"].items():
        sig = next(s for s in parse_note(both).signatures if s.name == name)
        assert sig.key_id.hex() == want["key_id"]
        assert sig.line() == f"— {name} {want['base64']}"
    with pytest.raises(UnverifiedNote, match="no known key"):
        open_note(both, [])


def test_go_bad_messages_and_bad_vkeys_are_refused() -> None:
    peter = NoteVerifier.from_vkey(PETER["vkey"])
    for text in GO["malformed_notes"]:
        with pytest.raises(MalformedNote):
            open_note(text.encode(), [peter])
    with pytest.raises(MalformedNote):
        parse_note(bytes.fromhex(GO["malformed_note_prefix_invalid_utf8"]) + GO["signed_by_peter"].encode())
    for bad in GO["bad_vkeys"]:
        with pytest.raises(MalformedKey):
            NoteVerifier.from_vkey(bad["vkey"])
    # Go's too-many-signatures case: 101 copies of one line.
    with pytest.raises(MalformedNote, match="more than 100"):
        parse_note(TEXT + b"\n" + GO["signature_lines"]["PeterNeumann"].encode() * 101)
    # Go's invalid-signature case: a known key's line that does not verify refuses the note.
    line = GO["signature_lines"]["PeterNeumann"]
    with pytest.raises(UnverifiedNote, match="does not verify"):
        open_note(TEXT + b"\n" + (line[:60] + "ABCD" + line[60:]).encode(), [peter])


@pytest.mark.parametrize("key", [PETER["vkey"], PETER["skey"]], ids=["vkey", "skey"])
def test_every_mangling_of_go_keys_is_refused(key: str) -> None:
    """Go's TestNewVerifier/TestNewSigner: every proper substring and every byte bumped by one."""
    parse = NoteSigner.from_skey if key.startswith("PRIVATE") else NoteVerifier.from_vkey
    manglings = {key[i:j] for i in range(len(key)) for j in range(i + 1, len(key) + 1)} - {key}
    manglings |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    accepted = []
    for mangled in manglings:
        try:
            parse(mangled)
            accepted.append(mangled)
        except MalformedKey:
            pass
    assert accepted == []


def test_spec_examples_parse() -> None:
    spec = GO["spec_examples"]
    example = parse_note(spec["signed_note"]["note"].encode())
    assert example.text == spec["signed_note"]["text"].encode()
    assert [(s.name, s.key_id.hex()) for s in example.signatures] == [
        (spec["signed_note"]["name"], spec["signed_note"]["key_id"])
    ]
    assert format_note(example) == spec["signed_note"]["note"].encode()
    checkpoint = parse_checkpoint(parse_note(spec["checkpoint"]["note"].encode()).text)
    assert (checkpoint.origin, checkpoint.size) == (spec["checkpoint"]["origin"], spec["checkpoint"]["size"])
    assert checkpoint.body() == parse_note(spec["checkpoint"]["note"].encode()).text
    cosig = parse_note(spec["checkpoint"]["note"].encode() + spec["cosignature_line"]["line"].encode() + b"\n")
    line = cosig.signatures[1]
    assert (line.name, line.key_id.hex()) == (spec["cosignature_line"]["name"], spec["cosignature_line"]["key_id"])
    assert int.from_bytes(line.signature[:8], "big") == spec["cosignature_line"]["timestamp"]


def test_cosignature_kat_byte_for_byte() -> None:
    signer = CosignatureSigner.from_skey(COSIG["witness"]["skey"])
    assert signer.skey == CosignatureSigner("witness.example/w1", seeded_kat("witness")).skey
    assert (signer.vkey, signer.key_id.hex()) == (COSIG["witness"]["vkey"], COSIG["witness"]["key_id"])
    body = COSIG["checkpoint_body"].encode()
    line = signer.cosign(body, COSIG["timestamp"])
    assert line.line() == COSIG["cosignature_line"]
    log = NoteSigner.from_skey(COSIG["log"]["skey"])
    assert log.vkey == COSIG["log"]["vkey"]
    assert format_note(Note(body, (log.sign(body), line))) == COSIG["signed_checkpoint"].encode()
    verifier = CosignatureVerifier.from_vkey(COSIG["witness"]["vkey"])
    assert verifier.verify(body, line) == COSIG["timestamp"]
    opened = open_note(COSIG["signed_checkpoint"].encode(), [verifier, NoteVerifier.from_vkey(COSIG["log"]["vkey"])])
    assert [s.name for s in opened.signatures] == ["example.com/behind-the-sofa", "witness.example/w1"]


def seeded_kat(role: str) -> bytes:
    import hashlib

    return hashlib.sha256(f"inferpay cosignature/v1 known-answer test: {role}".encode()).digest()


# ---- keys and cosignatures ----


def test_key_types_do_not_cross() -> None:
    note_key, cosigner = NoteSigner("k.test/a", seeded("a")), CosignatureSigner("k.test/a", seeded("a"))
    assert note_key.public_key == cosigner.public_key and note_key.key_id != cosigner.key_id
    with pytest.raises(MalformedKey, match="type"):
        NoteVerifier.from_vkey(cosigner.vkey)
    with pytest.raises(MalformedKey, match="type"):
        CosignatureVerifier.from_vkey(note_key.vkey)
    with pytest.raises(MalformedKey, match="type"):
        CosignatureSigner.from_skey(note_key.skey)
    assert "PRIVATE" not in repr(note_key) and note_key.skey not in repr(note_key)


def test_cosignature_refuses_other_bodies_times_keys_and_lengths() -> None:
    w = witness("w1")
    body = MemoryLog(entries=[b"a"]).checkpoint().body()
    sig = w.cosign(body, 1_700_000_000)
    verifier = CosignatureVerifier.from_vkey(w.vkey)
    assert verifier.verify(body, sig) == 1_700_000_000
    assert verifier.verify(body.replace(b"\n1\n", b"\n2\n"), sig) is None
    later = NoteSignature(sig.name, sig.key_id, (1_700_000_001).to_bytes(8, "big") + sig.signature[8:])
    assert verifier.verify(body, later) is None
    assert verifier.verify(body, NoteSignature(sig.name, sig.key_id, sig.signature[:-1])) is None
    assert CosignatureVerifier.from_vkey(witness("w2").vkey).verify(body, sig) is None
    assert w.cosign(body, 0).signature[:8] == bytes(8)
    with pytest.raises(MalformedNote):
        w.cosign(body, 1 << 63)
    with pytest.raises(MalformedNote):
        w.cosign(body, -1)


# ---- open_note rules ----


def test_unknown_keys_are_ignored_a_bad_known_signature_refuses_duplicates_kept_once() -> None:
    log, other = NoteSigner("log.test", seeded("l")), NoteSigner("other.test", seeded("o"))
    text = b"hello\n"
    signed = sign_note(text, other, log, log)
    opened = open_note(signed, [NoteVerifier.from_vkey(log.vkey)])
    assert [s.name for s in opened.signatures] == ["log.test"]
    # Same name, another key ID: an unknown key, ignored (not a failed known key).
    impostor = NoteSigner("log.test", seeded("impostor"))
    assert open_note(sign_note(text, impostor, log), [NoteVerifier.from_vkey(log.vkey)]).signatures
    with pytest.raises(UnverifiedNote):
        open_note(sign_note(text, impostor), [NoteVerifier.from_vkey(log.vkey)])
    bad = Note(text, (log.sign(b"other\n"), log.sign(text)))
    with pytest.raises(UnverifiedNote, match="does not verify"):
        open_note(format_note(bad), [NoteVerifier.from_vkey(log.vkey)])
    clash = NoteVerifier("log.test", impostor.public_key)
    object.__setattr__(clash, "key_id", log.key_id)  # a forged collision of name and key ID
    with pytest.raises(MalformedKey, match="two different keys"):
        open_note(signed, [NoteVerifier.from_vkey(log.vkey), clash])


def test_note_rules_at_the_edges() -> None:
    sig_line = NoteSigner("k", seeded("k")).sign(b"x\n").line().encode() + b"\n"
    assert parse_note(b"\n\n" + sig_line).text == b"\n"
    assert parse_note(b"a\n\n\n" + sig_line).text == b"a\n\n"  # the last blank line separates
    for bad in [
        b"a\n\n",  # no signatures
        b"a\n\n" + sig_line[:-1],  # no final newline
        b"a\n\n" + sig_line + b"\n",  # a blank line inside the block
        b"a\r\n\n" + sig_line,  # a control character
        b"a\n\n" + sig_line.replace(b"\xe2\x80\x94 ", b"- "),
        b"a\n\n" + sig_line.replace(b" ", b"\xc2\xa0", 1),  # a Unicode space
        b"a\n\n\xe2\x80\x94 k+1 AAAAAAAA\n",  # '+' in a name
        b"a\n\n\xe2\x80\x94 k AAAA\n",  # key ID with no signature
        b"a\n\n\xe2\x80\x94 k AAAAAAB=\n",  # non-canonical base64
        b"a\n\n\xe2\x80\x94 k AAAAAAA\n",  # no padding
        b"a\n\n\xe2\x80\x94  AAAAAAAA\n",  # empty name
    ]:
        with pytest.raises(MalformedNote):
            parse_note(bad)
    with pytest.raises(MalformedNote):
        format_note(Note(b"a\n", ()))
    with pytest.raises(MalformedNote):
        Note(b"no newline", ())
    with pytest.raises(MalformedNote):
        NoteSignature("k", b"123", b"s")


# ---- round trips, fuzzing, tampering ----


@st.composite
def notes(draw: st.DrawFn) -> Note:
    sigs = draw(
        st.lists(
            st.builds(NoteSignature, key_names, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)),
            min_size=1,
            max_size=5,
        )
    )
    return Note(draw(note_texts), tuple(sigs))


@given(notes())
def test_format_then_parse_is_identity(note: Note) -> None:
    data = format_note(note)
    assert parse_note(data) == note
    assert format_note(parse_note(data)) == data


@given(st.binary(max_size=300))
def test_parse_note_on_garbage_raises_only_malformed_note(data: bytes) -> None:
    try:
        note = parse_note(data)
    except MalformedNote:
        return
    assert format_note(note) == data  # what parses is canonical


@given(note_texts, st.data())
def test_any_flipped_byte_of_a_signed_note_is_refused(text: bytes, data: st.DataObject) -> None:
    log = NoteSigner("log.test", seeded("flip"))
    signed = sign_note(text, log)
    position = data.draw(st.integers(0, len(signed) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = signed[:position] + bytes([signed[position] ^ flip]) + signed[position + 1 :]
    with pytest.raises((MalformedNote, UnverifiedNote)):
        open_note(tampered, [NoteVerifier.from_vkey(log.vkey)])


def test_every_single_bit_flip_of_a_cosigned_checkpoint_is_refused() -> None:
    log = MemoryLog(entries=[b"a", b"b", b"c"])
    w = witness("w1")
    signed = log.signed(None, w)
    verifiers = [NoteVerifier.from_vkey(log.signer.vkey)]
    cosigner = CosignatureVerifier.from_vkey(w.vkey)
    for position in range(len(signed)):
        for bit in range(8):
            tampered = signed[:position] + bytes([signed[position] ^ (1 << bit)]) + signed[position + 1 :]
            try:
                opened = open_note(tampered, verifiers)
            except (MalformedNote, UnverifiedNote):
                continue
            # Only the cosignature line was hit: the log's line still verifies, the cosignature must not.
            assert opened.text == log.checkpoint().body()
            assert all(cosigner.verify(opened.text, s) is None for s in parse_note(tampered).signatures)


@given(st.text(max_size=120))
def test_vkey_and_skey_parsers_raise_only_malformed_key(text: str) -> None:
    for parse in (NoteVerifier.from_vkey, CosignatureVerifier.from_vkey, NoteSigner.from_skey):
        with contextlib.suppress(MalformedKey):
            parse(text)


# ---- checkpoints ----


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40),
    tree_sizes,
    hashes32,
    st.lists(note_lines.filter(bool), max_size=3),
)
def test_checkpoint_body_round_trips(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert parse_checkpoint(checkpoint.body()) == checkpoint


@pytest.mark.parametrize(
    "body",
    [
        b"o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n 1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n9223372036854775808\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",
        b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
        b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n",
        b"\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        b"o\n1\n",
        b"o\n\xd9\xa1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # an Arabic-Indic digit one
    ],
)
def test_checkpoint_parser_is_strict(body: bytes) -> None:
    with pytest.raises(MalformedCheckpoint):
        parse_checkpoint(body)


def test_checkpoint_accepts_size_bounds_and_extensions() -> None:
    root = b"\x01" * 32
    top = Checkpoint("o", (1 << 63) - 1, root, ("ext one",))
    assert parse_checkpoint(top.body()) == top
    assert Checkpoint("o", 0, root).body().startswith(b"o\n0\n")
    for bad in [dict(size=-1), dict(size=True), dict(root_hash=b"\x01" * 31), dict(extensions=("",)), dict(origin="")]:
        with pytest.raises(MalformedCheckpoint):
            Checkpoint(**{"origin": "o", "size": 1, "root_hash": root, **bad})  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_parse_checkpoint_on_garbage_raises_only_malformed_checkpoint(data: bytes) -> None:
    try:
        checkpoint = parse_checkpoint(data)
    except MalformedCheckpoint:
        return
    assert checkpoint.body() == data


def test_every_parser_error_is_an_inferpay_error_with_a_code() -> None:
    for error in (MalformedNote, MalformedKey, MalformedCheckpoint, UnverifiedNote):
        assert issubclass(error, InferpayError) and error.code
