"""TLS for clusters that leave one machine: a private CA and mutual-TLS certificates.

A Dask scheduler runs whatever pickled code a client sends it, so off one machine
every connection must be encrypted *and* authenticated. :func:`create` makes a
throwaway certificate authority and one certificate per role (scheduler, worker,
client), all signed by it; Dask then requires TLS on every connection and refuses
a peer whose certificate that CA did not sign (mutual TLS).

>>> files = create("/tmp/sweep-tls", hosts=["10.0.0.5"])        # doctest: +SKIP
>>> security = client_security(files)                          # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..exceptions import ClusterError

#: Roles that get a certificate; each Dask process uses the one of its role.
ROLES = ("scheduler", "worker", "client")


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA certificate and each role's certificate and key are."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def cert(self, role: str) -> Path:
        return self.directory / f"{role}.pem"

    def key(self, role: str) -> Path:
        return self.directory / f"{role}-key.pem"

    def for_role(self, role: str) -> list[Path]:
        """Files a process of ``role`` needs: the CA certificate and its own pair."""
        return [self.ca_file, self.cert(role), self.key(role)]


def _private_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sweep"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_names(hosts: Iterable[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = [x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _builder(subject: Any, issuer: Any, public_key: Any, days: float) -> Any:
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _ca(days: float) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _private_key()
    name = _name("sweep private CA")
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(role: str, ca_key: Any, ca_cert: Any, hosts: Iterable[str],
          days: float) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _private_key()
    cert = (_builder(_name(f"sweep {role}"), ca_cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
            # every Dask process both listens and connects: server and client auth
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def create(directory: str | Path, hosts: Iterable[str] = (),
           valid_days: float | None = None) -> TlsFiles:
    """Create a private CA and a certificate per role in ``directory``.

    Parameters
    ----------
    directory : path
        Created with mode 0700 if missing; the files are written with mode 0600.
    hosts : iterable of str
        Addresses or names of the hosts, put into the certificates' subject
        alternative names (Dask does not check them; other TLS tools may).
    valid_days : float, optional
        Lifetime of the certificates; default ``sweep.tls.valid-days``.

    Returns
    -------
    TlsFiles
        The paths of ``ca.pem`` and ``{role}.pem`` / ``{role}-key.pem``.
    """
    from cryptography.hazmat.primitives import serialization

    if valid_days is None:
        from ..config import resolve

        valid_days = resolve().tls_valid_days
    days = float(valid_days)
    files = TlsFiles(Path(directory))
    files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    hosts = list(hosts)
    ca_key, ca_cert = _ca(days)
    _write(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ROLES:
        key, cert = _leaf(role, ca_key, ca_cert, hosts, days)
        _write(files.cert(role), cert.public_bytes(serialization.Encoding.PEM))
        _write(files.key(role), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return files  # the CA key is never written: no one can sign more certificates


def security(ca_file: str | Path, cert: str | Path, key: str | Path) -> Any:
    """A client's ``distributed.Security``: mutual TLS, encryption required.

    Parameters
    ----------
    ca_file : path
        Certificate of the CA that signed the scheduler's and workers' certificates.
    cert, key : path
        This client's certificate (signed by the same CA) and its private key.
    """
    from distributed.security import Security

    for what, path in (("tls_ca", ca_file), ("tls_cert", cert), ("tls_key", key)):
        if not Path(path).is_file():
            raise ClusterError(
                f"TLS file {what}={str(path)!r} does not exist.\n"
                "  Fix: give the CA certificate, client certificate and client key the "
                "cluster was set up with: --tls-ca ca.pem --tls-cert client.pem "
                "--tls-key client-key.pem")
    return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                    tls_client_key=str(key), require_encryption=True)


def client_security(files: TlsFiles) -> Any:
    """The ``Security`` of sweep's own client for certificates made by :func:`create`."""
    return security(files.ca_file, files.cert("client"), files.key("client"))


def dask_config(directory: str | PurePosixPath) -> dict[str, Any]:
    """Dask settings that make remote schedulers and workers use the files in ``directory``.

    ``directory`` is where :func:`create`'s files lie *on the remote hosts*.
    Each process only reads the pair of its own role.
    """
    remote = PurePosixPath(directory)
    config: dict[str, Any] = {"distributed.comm.require-encryption": True,
                              "distributed.comm.tls.ca-file": str(remote / "ca.pem")}
    for role in ("scheduler", "worker"):
        config[f"distributed.comm.tls.{role}.cert"] = str(remote / f"{role}.pem")
        config[f"distributed.comm.tls.{role}.key"] = str(remote / f"{role}-key.pem")
    return config
