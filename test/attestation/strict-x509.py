"""Strict DER check of a certificate chain with Python's `cryptography` (Debian's python3-cryptography).

argv: DER files, root first, each issued by the one before it (the root by itself). For each it loads the
certificate with the strict DER parser, parses subject and issuer, checks the issuer equals the parent's subject
and the signature verifies with the parent's public key. Prints one JSON object per certificate:
{"subject": rfc4514, "rdns": [[oid, asn1 string type, value] per attribute] per RDN} or {"error": ...}.
"""
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec


def describe(name):
    return [[[a.oid.dotted_string, a._type.name, a.value] for a in rdn] for rdn in name.rdns]


def main(paths):
    parent = None
    out = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                cert = x509.load_der_x509_certificate(f.read())
            subject, issuer = cert.subject, cert.issuer
            entry = {"subject": subject.rfc4514_string(), "rdns": describe(subject)}
            signer = parent or cert
            if issuer != signer.subject:
                raise ValueError(f"issuer {issuer.rfc4514_string()} is not the parent's subject {signer.subject.rfc4514_string()}")
            signer.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
            parent = cert
        except Exception as e:  # reported, not raised: the test names the failing certificate
            entry = {"error": f"{type(e).__name__}: {e}"}
            parent = None
        out.append(entry)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
