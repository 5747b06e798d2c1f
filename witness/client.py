"""What a log calls to get a witness's cosignature: ``add_checkpoint(url, old_size, proof,
signed_checkpoint, timeout_s)``, for the gateway's checkpoint pusher.

Sans-IO core, thin transport (the shape of ``gateway.client.Payer``): ``add_checkpoint_request``
makes the body, ``read_add_checkpoint_answer`` turns a status, content type and body into the
cosignature lines or the same error the witness raised (409 with ``text/x.tlog.size`` is
``OldSizeMismatch`` carrying the witness's size, so the caller can retry from it). Given the
witness's ``CosignatureVerifier``, only lines from that key that verify over the checkpoint are
returned, and none is ``UnverifiedNote``. ``add_checkpoint`` sends it with ``requests`` (a
``requests.Session`` keeps connections alive across calls); it loads requests on first use,
so importing this module starts no HTTP library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ledger import errors as le
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import NoteSignature, parse_note
from ledger.tlog.witness_protocol import (
    SIZE_CONTENT_TYPE,
    format_add_checkpoint,
    parse_signature_lines,
    parse_size_body,
)

if TYPE_CHECKING:
    import requests

_ERROR_BY_STATUS: dict[int, type[le.InferpayError]] = {
    400: le.MalformedWitnessRequest,
    403: le.UnverifiedNote,
    404: le.UnknownLog,
    409: le.InconsistentCheckpoints,  # a 409 without text/x.tlog.size: same size, another root
    413: le.MalformedWitnessRequest,
    422: le.InvalidProof,
}


def add_checkpoint_request(old_size: int, proof: Sequence[bytes], signed_checkpoint: bytes) -> bytes:
    return format_add_checkpoint(old_size, proof, signed_checkpoint)


def read_add_checkpoint_answer(
    status: int,
    content_type: str,
    body: bytes,
    signed_checkpoint: bytes,
    verifier: CosignatureVerifier | None = None,
) -> list[NoteSignature]:
    """The witness's cosignature lines from a 200 answer, or the error its status stands for."""
    media_type = content_type.split(";")[0].strip().lower()
    if status == 409 and media_type == SIZE_CONTENT_TYPE:
        size = parse_size_body(body)
        raise le.OldSizeMismatch(f"the witness holds size {size}", size=size)
    if status != 200:
        text = body[:500].decode("utf-8", "replace").strip()
        error = _ERROR_BY_STATUS.get(status)
        if error is None:
            raise le.WitnessUnavailable(f"the witness answered {status}: {text}", status=status)
        raise error(f"the witness refused ({status}): {text}", status=status)
    signatures = parse_signature_lines(body)
    if verifier is None:
        return signatures
    text_of_note = parse_note(signed_checkpoint).text
    mine = [sig for sig in signatures if verifier.verify(text_of_note, sig) is not None]
    if not mine:
        raise le.UnverifiedNote(f"no valid cosignature from {verifier.name} in the witness's answer")
    return mine


def add_checkpoint(
    url: str,
    old_size: int,
    proof: Sequence[bytes],
    signed_checkpoint: bytes,
    timeout_s: float,
    *,
    verifier: CosignatureVerifier | None = None,
    session: requests.Session | None = None,
) -> list[NoteSignature]:
    """POST ``<url>/add-checkpoint``; the cosignature lines, or raise (see the module docstring).

    ``url`` is the witness's submission prefix. An unreachable witness, a timeout or a 5xx is
    ``WitnessUnavailable``.
    """
    import requests

    body = add_checkpoint_request(old_size, proof, signed_checkpoint)
    poster = session if session is not None else requests
    try:
        response = poster.post(
            url.rstrip("/") + "/add-checkpoint",
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout_s,
        )
    except requests.RequestException as exc:
        raise le.WitnessUnavailable(f"cannot reach the witness at {url}: {exc}", url=url) from exc
    return read_add_checkpoint_answer(
        response.status_code, response.headers.get("Content-Type", ""), response.content, signed_checkpoint, verifier
    )
