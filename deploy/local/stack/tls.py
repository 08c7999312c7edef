"""The local stack's certificate authority, and the broker's certificate it signs.

``xietong stack up`` makes a CA once (``<XIETONG_HOME>/kafka/tls/ca.pem``, the file a
client names in ``XIETONG_KAFKA_SSL_CA_LOCATION``) and a certificate for the broker's TLS
listener on loopback (``127.0.0.1`` and ``localhost``), signed by it and renewed when
it is within a month of its end. The broker reads its key and certificate from a
PKCS#12 key store whose password is generated beside it (mode 0600). The CA's key
stays in the same folder: it signs nothing but this broker's certificate.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
CERTIFICATE_DAYS = 365
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class BrokerKeyStore:
    """What the broker's ``ssl.keystore.*`` properties name."""

    ca: Path
    keystore: Path
    password: str


def _private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Xietong local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate_authority(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_file, ca_file = folder / "ca-key.pem", folder / "ca.pem"
    if key_file.exists() and ca_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(ca_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = _name("Xietong local CA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    ca_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


def _still_good(keystore: Path, password: Path, ca: x509.Certificate) -> bool:
    if not (keystore.exists() and password.exists()):
        return False
    try:
        _, certificate, _ = pkcs12.load_key_and_certificates(
            keystore.read_bytes(), password.read_bytes()
        )
    except ValueError:
        return False
    return (
        certificate is not None
        and certificate.issuer == ca.subject
        and certificate.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE
    )


def broker_keystore(folder: Path) -> BrokerKeyStore:
    """The CA and the broker's key store under ``folder``, made or renewed as needed."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, ca = _certificate_authority(folder)
    keystore, password_file = folder / "broker.p12", folder / "broker.p12.password"
    if not _still_good(keystore, password_file, ca):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        password = secrets.token_urlsafe(24)
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode())
        )
        _private(
            keystore,
            pkcs12.serialize_key_and_certificates(b"broker", key, certificate, [ca], encryption),
        )
        _private(password_file, password.encode())
    return BrokerKeyStore(folder / "ca.pem", keystore, password_file.read_text())
