"""The lab's NTLM message sealing: pyspnego's bytes, and what a wrong message gets."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
import spnego
from spnego._ntlm_raw.crypto import rc4init, sealkey, signkey
from spnego._ntlm_raw.messages import NegotiateFlags
from spnego._ntlm_raw.security import seal

from lab.server.auth import (
    Account,
    Authenticator,
    AuthFailed,
    AuthMode,
    ConnectionAuth,
    NtlmSeal,
    UserFile,
)

ACCOUNT = Account("ferryman", "Lab-Passw0rd-for-tests")
PLAIN = "Plaintext".encode("utf-16-le")
FLAGS = int(
    NegotiateFlags.sign
    | NegotiateFlags.seal
    | NegotiateFlags.extended_session_security
    | NegotiateFlags.key_128
    | NegotiateFlags.key_exch
)


def _seal_from_keys(flags: int, session_key: bytes) -> NtlmSeal:
    """A server's sealing from a session key, as pyspnego derives its keys."""
    return NtlmSeal(
        flags,
        rc4init(sealkey(flags, session_key, "accept"))._handle,
        rc4init(sealkey(flags, session_key, "initiate"))._handle,
        signkey(flags, session_key, "accept"),
        signkey(flags, session_key, "initiate"),
        0,
        0,
    )


@pytest.mark.parametrize("key_exch", [True, False])
def test_sealing_gives_pyspnegos_bytes(key_exch: bool) -> None:
    flags = FLAGS if key_exch else FLAGS & ~int(NegotiateFlags.key_exch)
    session_key = b"\x55" * 16
    ours = _seal_from_keys(flags, session_key)
    handle = rc4init(sealkey(flags, session_key, "accept"))
    sign_key = signkey(flags, session_key, "accept")
    for seq, message in enumerate([PLAIN, b"", b"<s:Envelope/>" * 300, PLAIN]):
        sealed, signature = seal(flags, handle, sign_key, seq, message)
        assert ours.wrap(message) == (signature, sealed)


def test_unsealing_reads_what_pyspnego_seals_and_refuses_changes() -> None:
    session_key = bytes(range(16))
    ours = _seal_from_keys(FLAGS, session_key)
    handle = rc4init(sealkey(FLAGS, session_key, "initiate"))
    sign_key = signkey(FLAGS, session_key, "initiate")
    sealed, signature = seal(FLAGS, handle, sign_key, 0, PLAIN)
    assert ours.unwrap(signature, sealed) == PLAIN
    sealed, signature = seal(FLAGS, handle, sign_key, 1, b"second")
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(ValueError):
        ours.unwrap(signature, tampered)


def _handshake(protocol: str) -> tuple[Any, Authenticator, ConnectionAuth, UserFile]:
    """A logged-in connection; ``negotiate`` (as pypsrp) also exchanges SPNEGO's mechListMIC,
    which uses a sequence number each way before the first message."""
    user_file = UserFile(ACCOUNT)
    auth = Authenticator(AuthMode.NTLM, ACCOUNT, user_file)
    client = spnego.client(ACCOUNT.username, ACCOUNT.password, protocol=protocol)
    state = ConnectionAuth()
    token = client.step()
    while True:
        headers = {"Authorization": "Negotiate " + base64.b64encode(token or b"").decode()}
        try:
            auth.accept(state, headers, b"")
        except AuthFailed as failed:
            value = dict(failed.reply.headers)["WWW-Authenticate"]
            token = client.step(base64.b64decode(value.split(" ", 1)[1]))
            continue
        break
    for name, value in state.extra.pop("final_headers", []):
        if name == "WWW-Authenticate" and " " in value:
            client.step(base64.b64decode(value.split(" ", 1)[1]))
    assert client.complete and state.authenticated and state.encrypted
    return client, auth, state, user_file


def _client_body(client: Any, message: bytes) -> tuple[dict[str, str], bytes]:
    """A request body as pypsrp builds it."""
    state = ConnectionAuth(context=client, encrypted=True)
    content_type, body = Authenticator.wrap(state, message)
    return {"Content-Type": content_type}, body


def _reply_text(client: Any, body: bytes) -> bytes:
    wrapped = body.split(b"application/octet-stream\r\n", 1)[1].rsplit(b"--Encrypted", 1)[0]
    header_len = struct.unpack("<i", wrapped[:4])[0]
    return bytes(
        client.unwrap_winrm(wrapped[4 : 4 + header_len], wrapped[4 + header_len :])
    )


@pytest.mark.parametrize("protocol", ["negotiate", "ntlm"])
def test_a_negotiated_connection_seals_with_the_lab_and_talks_to_pyspnego(protocol: str) -> None:
    client, auth, state, user_file = _handshake(protocol)
    try:
        assert state.seal is not None  # the installed pyspnego's state was taken over
        for i in range(5):
            request = f"<request {i}/>".encode() * (i + 1)
            headers, body = _client_body(client, request)
            assert auth.accept(state, headers, body).body == request
            reply = f"<reply {i}/>".encode() * (i * 50 + 1)
            _, payload = auth.wrap(state, reply)
            assert _reply_text(client, payload) == reply
    finally:
        user_file.remove()


def test_a_replayed_or_altered_request_is_answered_400() -> None:
    client, auth, state, user_file = _handshake("negotiate")
    try:
        headers, body = _client_body(client, b"<first/>")
        assert auth.accept(state, headers, body).body == b"<first/>"
        with pytest.raises(AuthFailed) as replayed:
            auth.accept(state, headers, body)  # its sequence number was used
        assert replayed.value.reply.status == 400
        client2, auth2, state2, user_file2 = _handshake("negotiate")
        try:
            headers, body = _client_body(client2, b"<second/>")
            at = body.index(b"application/octet-stream\r\n") + 30
            altered = body[:at] + bytes([body[at] ^ 0x20]) + body[at + 1 :]
            with pytest.raises(AuthFailed) as failed:
                auth2.accept(state2, headers, altered)
            assert failed.value.reply.status == 400
        finally:
            user_file2.remove()
    finally:
        user_file.remove()
