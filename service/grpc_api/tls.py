"""TLS (and mutual TLS) credentials for the gRPC port, re-read when the files change.

gRPC asks the fetcher for a new certificate configuration at each new connection's handshake
(`dynamic_ssl_server_credentials`, supported by grpc.aio): a rotated certificate (a Kubernetes
Secret update, cert-manager renewal) is served to new connections without a restart, and
established connections keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

from service.errors import StartupError
from service.settings import SecuritySettings, setting_label

log = logging.getLogger(__name__)


class CertificateFiles:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = [p for p in (cert, key, client_ca) if p is not None]
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.stamps = self.read_stamps()

    def read_stamps(self) -> list[tuple[int, int]]:
        return [(s.st_mtime_ns, s.st_size) for s in (p.stat() for p in self.paths)]

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
        )

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last look, else None (keep)."""
        try:
            stamps = self.read_stamps()
            if stamps == self.stamps:
                return None
            configuration = self.configuration()
        except (OSError, ValueError) as e:  # half-written during a rotation: keep the old one
            log.warning("TLS files unreadable; keeping the current certificate: %s", e)
            return None
        self.stamps = stamps
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return configuration


def check_files(security: SecuritySettings) -> None:
    """Every TLS file there and readable, the certificate and key a pair, the client CA a PEM
    certificate; else a StartupError naming the setting and the file (grpc itself would end in
    "Failed to bind", blaming the port)."""
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = getattr(security, name)
        if path is not None:
            try:
                path.read_bytes()
            except OSError as e:
                raise StartupError(f"{setting_label(name)} {path}: {e.strerror}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            security.tls_cert_file, security.tls_key_file
        )
    except ssl.SSLError as e:
        raise StartupError(
            f"{setting_label('tls_cert_file')} {security.tls_cert_file} and "
            f"{setting_label('tls_key_file')} {security.tls_key_file}: not a PEM certificate "
            f"and its private key ({e.reason or e})"
        ) from None
    if security.tls_client_ca_file is not None:
        try:
            ssl.create_default_context(cafile=security.tls_client_ca_file)
        except ssl.SSLError as e:
            raise StartupError(
                f"{setting_label('tls_client_ca_file')} {security.tls_client_ca_file}: not a PEM "
                f"CA certificate ({e.reason or e})"
            ) from None


def server_credentials(security: SecuritySettings) -> grpc.ServerCredentials | None:
    """Credentials for `add_secure_port`, or None when TLS is off (plaintext port)."""
    if security.tls_cert_file is None or security.tls_key_file is None:
        return None
    check_files(security)
    files = CertificateFiles(
        security.tls_cert_file, security.tls_key_file, security.tls_client_ca_file
    )
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(),
        files.changed,
        require_client_authentication=security.tls_client_ca_file is not None,
    )
