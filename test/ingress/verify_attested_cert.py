"""Independent verifier of the agent's attested TLS certificate (Python's ssl, http.client, `cryptography`,
`cbor2` — none of the agent's code). Usage:

    verify_attested_cert.py PORT SERVERNAME ROOT_PEM [NONCE_B64] [PATH] [API_KEY]

Connects to 127.0.0.1:PORT with SNI SERVERNAME (certificate not trusted by the store: it is self-signed and
attested instead), sends `GET PATH` (default /) over the same TLS connection with http.client, and checks the
leaf: SAN → longest first label → hex → COSE_Sign1 (ES384 over Sig_structure with the document's
`certificate`), `certificate` ← cabundle ← ROOT_PEM (signatures and validity), user_data == the leaf's SPKI
DER, nonce == NONCE_B64 when given. Prints one JSON line; exits 1 with {"error": ...} on the first failure.
"""
import base64
import datetime
import http.client
import hashlib
import json
import socket
import ssl
import sys

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(1)


def main():
    port, servername, root_pem = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    nonce_b64 = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    path = sys.argv[5] if len(sys.argv) > 5 else "/"
    api_key = sys.argv[6] if len(sys.argv) > 6 else None

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # http.client would send SNI = its host: wrap the socket ourselves to choose the SNI, then hand it over.
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=servername)
    headers = {"Host": "localhost"}
    if api_key is not None:
        headers["api-key"] = api_key
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode("latin1")
    der = conn.sock.getpeercert(binary_form=True)
    tls_version = conn.sock.version()
    conn.close()

    leaf = x509.load_der_x509_certificate(der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    label = max((n.split(".")[0] for n in names), key=len)
    try:
        cose_bytes = bytes.fromhex(label)
    except ValueError:
        fail("the longest SAN label is not hex")
    cose = cbor2.loads(cose_bytes)
    if isinstance(cose, cbor2.CBORTag):
        cose = cose.value
    protected, _unprotected, payload, signature = cose
    if cbor2.loads(protected) != {1: -35}:
        fail("protected header is not ES384")
    doc = cbor2.loads(payload)

    signer = x509.load_der_x509_certificate(doc["certificate"])
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    try:
        signer.public_key().verify(encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        fail("COSE signature does not verify")

    root = x509.load_pem_x509_certificate(open(root_pem, "rb").read())
    bundle = [x509.load_der_x509_certificate(c) for c in doc["cabundle"]]
    if bundle[0].fingerprint(hashes.SHA256()) != root.fingerprint(hashes.SHA256()):
        fail("cabundle[0] is not the pinned root")
    chain = bundle + [signer]
    now = datetime.datetime.utcnow()  # cryptography 38: naive UTC validity
    for issuer, subject in zip(chain, chain[1:]):
        if subject.issuer != issuer.subject:
            fail("chain: issuer name mismatch")
        try:
            issuer.public_key().verify(subject.signature, subject.tbs_certificate_bytes, ec.ECDSA(subject.signature_hash_algorithm))
        except InvalidSignature:
            fail("chain: a signature does not verify")
    for c in chain:
        if not (c.not_valid_before <= now <= c.not_valid_after):
            fail("a chain certificate is outside its validity")

    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if doc["user_data"] != spki:
        fail("user_data is not the leaf's SPKI DER")
    if doc.get("public_key") is not None:
        fail("public_key is present")
    if nonce_b64 is not None and doc["nonce"] != base64.b64decode(nonce_b64 + "=" * (-len(nonce_b64) % 4)):
        fail("nonce differs from the one sent")

    print(json.dumps({
        "ok": True,
        "status": resp.status,
        "body": body,
        "tls": tls_version,
        "names": [n if len(n) < 80 else "<hex %d>.%s" % (len(n.split(".", 1)[0]), n.split(".", 1)[1]) for n in names],
        "doc_bytes": len(cose_bytes),
        "nonce": base64.b64encode(doc["nonce"]).decode(),
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "leaf_not_after": leaf.not_valid_after.isoformat(),
        "signer_not_after": signer.not_valid_after.isoformat(),
        "leaf_sha256": leaf.fingerprint(hashes.SHA256()).hex(),
    }))


main()
