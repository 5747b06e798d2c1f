"""Transparency-log primitives in the C2SP formats: signed notes, checkpoints, cosignatures,
tiles, proofs, the witness protocol's bodies and trust policies.

What it is for: making and checking the bytes that let anyone (a witness, a client holding a
receipt, a monitor) see that the ledger's log only ever grows and that an entry is in it, in
formats other implementations read: c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature,
tlog-tiles, tlog-proof, tlog-witness and tlog-policy.

Modules: ``note`` (signed notes, Ed25519 note keys), ``checkpoint``, ``cosignature``
(cosignature/v1 keys), ``tiles``, ``proof``, ``witness_protocol``, ``policy``, ``text`` (the
strict base64 and decimal every parser shares), and ``ed25519`` (the only module that touches
signature bytes through a crypto library).

This package is pure computation on bytes: it must never do I/O (files, network, database,
logging) or read a clock; a timestamp to sign is always the caller's argument. Every parser
raises only errors from ``ledger.errors`` on any input.
"""
