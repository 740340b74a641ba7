"""The API server's credentials: a CA, a serving certificate, an admin client certificate, a
bearer token and the kubeconfig that holds them -- all in <root>/api, readable by root only.

Whoever can read the kubeconfig can exec into every pod as root, so every file is created
0600 (O_EXCL on a temp name, then rename: never a moment with wider permissions) and the
directory 0700. ECDSA P-256 keys: as strong as RSA-3072 and generated in a millisecond.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets

CA, CA_KEY = "ca.crt", "ca.key"
SERVER, SERVER_KEY = "server.crt", "server.key"
ADMIN, ADMIN_KEY = "admin.crt", "admin.key"
TOKEN = "token"
KUBECONFIG = "kubeconfig"
USER = "minipod-admin"  # the client certificate's CN: the user name in kubectl's messages


def api_dir(root: str) -> str:
    return os.path.join(root, "api")


def kubeconfig_path(root: str) -> str:
    return os.path.join(api_dir(root), KUBECONFIG)


def _write_private(path: str, data: bytes) -> None:
    from minipod import state

    state.write_bytes(path, data, 0o600)


def _read(d: str, name: str) -> bytes:
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def ensure(root: str) -> str:
    """Create what is missing (a CA first: everything else is signed by it); return the dir.

    Existing credentials are kept, so a restarted server keeps working with the kubeconfig a
    user has already copied; delete <root>/api to rotate them all."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = api_dir(root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM

    def key_bytes(key) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def load_ca():
        cert = x509.load_pem_x509_certificate(_read(d, CA))
        key = serialization.load_pem_private_key(_read(d, CA_KEY), None)
        return cert, key

    if not all(os.path.exists(os.path.join(d, f)) for f in (CA, CA_KEY)):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minipod-ca")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(os.path.join(d, CA_KEY), key_bytes(key))
        _write_private(os.path.join(d, CA), cert.public_bytes(pem))
        for f in (SERVER, ADMIN):  # signed by a CA that is gone: make them again
            try:
                os.unlink(os.path.join(d, f))
            except FileNotFoundError:
                pass

    def leaf(cert_name: str, key_name: str, cn: str, org: str | None, server: bool) -> None:
        if os.path.exists(os.path.join(d, cert_name)) and os.path.exists(
                os.path.join(d, key_name)):
            return
        ca_cert, ca_key = load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:  # the apiserver reads O as the group: system:masters, as kubeadm's admin
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        b = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
             .issuer_name(ca_cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=825))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else
                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        _write_private(os.path.join(d, key_name), key_bytes(key))
        _write_private(os.path.join(d, cert_name), cert.public_bytes(pem))

    leaf(SERVER, SERVER_KEY, "minipod-apiserver", None, server=True)
    leaf(ADMIN, ADMIN_KEY, USER, "system:masters", server=False)
    if not os.path.exists(os.path.join(d, TOKEN)):
        _write_private(os.path.join(d, TOKEN), secrets.token_hex(32).encode() + b"\n")
    return d


def token(root: str) -> str:
    return _read(api_dir(root), TOKEN).decode().strip()


def write_kubeconfig(root: str, host: str, port: int) -> str:
    """The kubeconfig for https://host:port, with the admin's client certificate inline."""
    import yaml

    d = api_dir(root)

    def b64(name: str) -> str:
        return base64.b64encode(_read(d, name)).decode()

    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "minipod", "cluster": {
            "server": f"https://{host}:{port}", "certificate-authority-data": b64(CA)}}],
        "users": [{"name": USER, "user": {"client-certificate-data": b64(ADMIN),
                                          "client-key-data": b64(ADMIN_KEY)}}],
        "contexts": [{"name": "minipod", "context": {"cluster": "minipod", "user": USER,
                                                     "namespace": "default"}}],
        "current-context": "minipod",
    }
    path = kubeconfig_path(root)
    _write_private(path, yaml.safe_dump(doc, sort_keys=False).encode())
    return path


def server_context(root: str):
    """TLS 1.2+ with our serving certificate; a client certificate is asked for and, if one
    is sent, must be signed by our CA (else the handshake fails). A request with neither a
    certificate nor the bearer token gets 401 from the handler (server.py)."""
    import ssl

    d = api_dir(root)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(d, SERVER), os.path.join(d, SERVER_KEY))
    ctx.load_verify_locations(os.path.join(d, CA))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # kubectl's exec/port-forward need HTTP/1.1 (Upgrade); ALPN h2 would make Go try HTTP/2.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
