"""The private CA sweep makes: a chain that verifies, SANs, mutual TLS, private files."""

from __future__ import annotations

import ipaddress
import ssl
import stat

import pytest
from cryptography import x509

from keras_sweep import ClusterError
from keras_sweep.clusters import tls


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tls.TlsFiles:
    return tls.create(tmp_path_factory.mktemp("tls") / "ca", hosts=["10.77.0.11", "node-2"])


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_role_certificate_is_signed_by_the_ca(files):
    ca = _load(files.ca_file)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for role in tls.ROLES:
        cert = _load(files.cert(role))
        cert.verify_directly_issued_by(ca)  # raises if not
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime.days <= 8


def test_certificates_name_the_hosts(files):
    sans = _load(files.cert("scheduler")).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.77.0.11") in sans.get_values_for_type(x509.IPAddress)
    assert "node-2" in sans.get_values_for_type(x509.DNSName)


def test_files_are_private_and_the_ca_key_is_not_kept(files):
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for path in files.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in files.directory.iterdir()) == sorted(
        ["ca.pem"] + [f"{r}{s}" for r in tls.ROLES for s in (".pem", "-key.pem")])


def _handshake(server_files, client_files, client_role="client"):
    """A mutual-TLS handshake in memory, configured as Dask configures it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                        cafile=str(server_files.ca_file))
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(server_files.cert("scheduler"), server_files.key("scheduler"))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                        cafile=str(client_files.ca_file))
    client.check_hostname = False
    client.load_cert_chain(client_files.cert(client_role), client_files.key(client_role))
    a, b, c, d = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(a, b, server_side=True)
    k = client.wrap_bio(c, d)
    for _ in range(10):
        for side in (k, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        a.write(d.read())
        c.write(b.read())
    return s.getpeercert()


def test_mutual_tls_accepts_the_cas_certificates(files):
    assert _handshake(files, files)["subject"]
    assert _handshake(files, files, client_role="worker")["subject"]


def test_a_certificate_of_another_ca_is_refused(files, tmp_path):
    other = tls.create(tmp_path / "other", hosts=["10.77.0.11"])
    with pytest.raises(ssl.SSLError, match="certificate"):
        _handshake(files, other)


def test_security_requires_encryption_and_existing_files(files, tmp_path):
    security = tls.client_security(files)
    assert security.require_encryption
    assert security.tls_client_cert == str(files.cert("client"))
    with pytest.raises(ClusterError, match="Fix: give the CA certificate"):
        tls.security(tmp_path / "missing.pem", files.cert("client"), files.key("client"))


def test_remote_config_points_each_role_at_its_files():
    config = tls.dask_config("/tmp/sweep-tls-x")
    assert config["distributed.comm.require-encryption"] is True
    assert config["distributed.comm.tls.ca-file"] == "/tmp/sweep-tls-x/ca.pem"
    assert config["distributed.comm.tls.worker.key"] == "/tmp/sweep-tls-x/worker-key.pem"
