"""A real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from typing_extensions import Self

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One message as the server got it: the envelope, the parsed message and its raw bytes."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


class RecordingHandler:
    """Accepts mail (minus the `refuse` addresses) and keeps it in `received`."""

    def __init__(self, refuse: Iterable[str] = ()):
        self.refuse = {address.lower() for address in refuse}
        self.received: list[Received] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # The reply goes out only after this returns, so a client that got its 250 can
        # read the message here without waiting.
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=email.message_from_bytes(envelope.content, policy=email.policy.default),
                raw=envelope.content,
                tls=session.ssl is not None,
                login=session.auth_data,
            )
        )
        return "250 Message accepted for delivery"


class _LoopbackController(Controller):
    """Binds port 0 and learns the kernel's choice, so no port is guessed and none collides."""

    def _trigger_server(self) -> None:
        # aiosmtpd probes (host, self.port) after binding; with port 0 that probe must use
        # the real port, which only the bound socket knows.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """`with SmtpServer() as smtp:` serves SMTP on 127.0.0.1:`smtp.port` until the block ends.

    `tls=True` offers STARTTLS with a fresh self-signed certificate (its PEM is `ca_file`,
    for the client to trust) and requires it; `credentials=(user, password)` requires AUTH.
    """

    def __init__(
        self,
        *,
        refuse: Iterable[str] = (),
        tls: bool = False,
        credentials: tuple[str, str] | None = None,
    ):
        self.handler = RecordingHandler(refuse)
        self.tls = tls
        self.credentials = credentials
        self.ca_file: Path | None = None
        self._tempdir: tempfile.TemporaryDirectory | None = None
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        assert self._controller is not None, "the server is not running"
        return self._controller.port

    def __enter__(self) -> Self:
        options: dict[str, Any] = {
            # Strict like many relays: a message must not need SMTPUTF8 (aiosmtpd's
            # Controller would otherwise offer it and hide unencoded non-ASCII headers).
            "enable_SMTPUTF8": False,
            # Without it aiosmtpd calls socket.getfqdn(), which can stall on DNS.
            "server_hostname": "localhost",
        }
        if self.tls:
            self._tempdir = tempfile.TemporaryDirectory(prefix="smtp-tls-")
            cert, key = _self_signed_certificate(Path(self._tempdir.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            options.update(tls_context=context, require_starttls=True)
            self.ca_file = cert
        if self.credentials is not None:
            options.update(authenticator=self._authenticate, auth_required=True)
        self._controller = _LoopbackController(self.handler, hostname=HOST, port=0, **options)
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._controller is not None:
            self._controller.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        login = auth_data.login.decode()
        if (login, auth_data.password.decode()) == self.credentials:
            return AuthResult(success=True, auth_data=login)
        # handled=False makes aiosmtpd answer 535; its default (True) means "I already
        # replied", and the client would wait for an answer that never comes.
        return AuthResult(success=False, handled=False)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost that is its own CA; returns (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "export-pipelines test SMTP")])
    now = dt.datetime.now(dt.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        # CA and key-usage extensions: OpenSSL's strict chain checks want them on a trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
