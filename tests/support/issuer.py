"""A test identity provider: tests/support/jwks_server.py in a container on a Docker network
a test module makes, speaking https with a CA and server certificate generated per test, and the
server settings that point a database at it. The `network` and `issuers` fixtures are in
tests/extension/conftest.py.
"""

import datetime
import json
import shutil
import time
import uuid
from pathlib import Path

from devtools.jwt import public_jwk

JWKS_SERVER = Path(__file__).resolve().parents[1] / "support" / "jwks_server.py"
REFRESH_MIN = 3
AUDIENCE = "app"


def certificates(folder, host):
    """A CA and a server certificate for `host`, written as PEM files into `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pg-session-jwt test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                           False), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "cert.pem").write_bytes(server.public_bytes(pem))
    (folder / "key.pem").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca_folder = folder.parent / f"{folder.name}-ca"
    ca_folder.mkdir()
    (ca_folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    return ca_folder


class Issuer:
    """One jwks_server.py container: its folder on the host, its URL on the network."""

    def __init__(self, docker_client, image, network, folder, tls=True, port=8443):
        self.folder = folder
        self.name = f"pgjwt-issuer-{uuid.uuid4().hex[:10]}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(JWKS_SERVER, folder / "jwks_server.py")
        self.ca_folder = certificates(folder, self.name) if tls else None
        self.url = f"{'https' if tls else 'http'}://{self.name}:{port}/jwks.json"
        self.container = docker_client.containers.run(
            image, entrypoint=["python3", "/srv/jwks_server.py", "/srv", str(port)],
            detach=True, network=network, name=self.name, volumes={str(folder): {"bind": "/srv"}},
            labels={"io.pg-session-jwt.test": "1"})
        deadline = time.monotonic() + 30
        while not (folder / "ready").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"issuer not ready:\n{self.container.logs().decode()}")
            time.sleep(0.1)

    def publish(self, *keys, cache_control=f"max-age={REFRESH_MIN}"):
        document = json.dumps({"keys": [json.loads(public_jwk(key)) for key in keys]})
        tmp = self.folder / "jwks.json.tmp"
        tmp.write_text(document)
        tmp.replace(self.folder / "jwks.json")
        (self.folder / "cache-control").write_text(cache_control)

    def publish_document(self, name, text, cache_control="max-age=300"):
        """Serve the JWKS document `text` at /NAME/jwks.json (the URL it returns)."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        tmp = folder / "jwks.json.tmp"
        tmp.write_text(text)
        tmp.replace(folder / "jwks.json")
        (folder / "cache-control").write_text(cache_control)
        return self.url.rsplit("/", 1)[0] + f"/{name}/jwks.json"

    def hits(self):
        path = self.folder / "hits.log"
        return path.read_text().splitlines() if path.exists() else []

    def remove(self):
        try:
            self.container.remove(force=True)
        except Exception:  # already gone (a test stopped it)
            pass


def jwks_env(issuer, **extra):
    env = {"PG_SESSION_JWT_JWKS_URL": issuer.url, "PG_SESSION_JWT_AUDIENCE": AUDIENCE,
           "PG_SESSION_JWT_JWKS_REFRESH_MIN": str(REFRESH_MIN)}
    if issuer.ca_folder is not None:
        env["PG_SESSION_JWT_JWKS_CA_FILE"] = "/etc/pgjwt-test-ca/ca.pem"
    env.update(extra)
    return env


def ca_volume(issuer):
    return {str(issuer.ca_folder): {"bind": "/etc/pgjwt-test-ca", "mode": "ro"}}
