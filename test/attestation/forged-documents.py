"""Forged Nitro-shaped attestation documents, built with tools independent of the verifier: Debian's
python3-cryptography (certificates, ECDSA) and python3-cbor2 (CBOR).

argv: OUTDIR. Writes root.pem (the trusted root of every case), one <case>.cbor per case, and meta.json
({"now": ms, "pcrs": {"PCR0": hex, ...}, "nonce": hex, "cases": [names]}). Each case is a complete COSE_Sign1 whose
signatures are all valid except where the case says otherwise: the verifier must refuse it for the reason its name
gives (forged-documents.test.ts holds the expected error codes).
"""
import datetime
import hashlib
import json
import os
import sys

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ObjectIdentifier

OUT = sys.argv[1]
NOW = datetime.datetime(2025, 6, 1, 12, 0, 0)
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
PCRS = {i: hashlib.sha384(b"pcr%d" % i).digest() for i in range(16)}
NONCE = bytes(range(32))
UNKNOWN = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Forge"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def usage(digital=False, cert_sign=False, crl=False, non_rep=False):
    return x509.KeyUsage(digital_signature=digital, content_commitment=non_rep, key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=crl, encipher_only=False, decipher_only=False)


CA_USAGE = usage(digital=True, cert_sign=True, crl=True)
LEAF_USAGE = usage(digital=True, non_rep=True)


def cert(subject, issuer, key, signer, nb, na, bc="ca", path_len=None, ku=CA_USAGE, extra=()):
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na))
    if bc is not None:
        b = b.add_extension(x509.BasicConstraints(ca=bc == "ca", path_length=path_len if bc == "ca" else None), critical=True)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    for ext in extra:
        b = b.add_extension(ext, critical=True)
    return b.sign(signer, hashes.SHA384())


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def p384():
    return ec.generate_private_key(ec.SECP384R1())


ROOT_KEY = p384()
ROOT = cert("root", "root", ROOT_KEY, ROOT_KEY, NOW - 365 * DAY, NOW + 365 * DAY)


def chain(inter=None, leaf=None, second=None, curve=None):
    """(leaf key, leaf cert, cabundle root first): root → int1 [→ int2] → leaf, each overridable."""
    ik = p384()
    ic = cert("int1", "root", ik, ROOT_KEY, **{"nb": NOW - 30 * DAY, "na": NOW + 30 * DAY, **(inter or {})})
    bundle, signer, signer_name = [ROOT, ic], ik, "int1"
    if second is not None:
        k2 = p384()
        bundle.append(cert("int2", "int1", k2, ik, **{"nb": NOW - 30 * DAY, "na": NOW + 30 * DAY, **second}))
        signer, signer_name = k2, "int2"
    lk = ec.generate_private_key(curve or ec.SECP384R1())
    lc = cert("leaf", signer_name, lk, signer, **{"nb": NOW - HOUR, "na": NOW + 2 * HOUR, "bc": "ee", "ku": LEAF_USAGE, **(leaf or {})})
    return lk, lc, bundle


def payload(leaf_cert, bundle, **over):
    m = {"module_id": "i-forge-enc0", "digest": "SHA384", "timestamp": int(NOW.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000), "pcrs": PCRS,
         "certificate": der(leaf_cert), "cabundle": [der(c) for c in bundle], "public_key": None, "user_data": None, "nonce": NONCE}
    m.update(over)
    return cbor2.dumps(m)


def sign1(key, payload_bytes, protected=None, envelope=None):
    prot = cbor2.dumps({1: -35}) if protected is None else protected
    r, s = decode_dss_signature(key.sign(cbor2.dumps(["Signature1", prot, b"", payload_bytes]), ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return envelope(prot, payload_bytes, sig) if envelope else cbor2.dumps([prot, {}, payload_bytes, sig])


cases = []


def write(case, data):
    with open(os.path.join(OUT, case + ".cbor"), "wb") as f:
        f.write(data)
    cases.append(case)


def doc(case, inter=None, leaf=None, second=None, curve=None, over=None, **cose):
    lk, lc, bundle = chain(inter, leaf, second, curve)
    write(case, sign1(lk, payload(lc, bundle, **(over or {})), **cose))


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "root.pem"), "wb") as f:
        f.write(ROOT.public_bytes(serialization.Encoding.PEM))
    # Controls: what a well-formed forged-root document looks like passes.
    doc("control")
    doc("control-two-intermediates", second={})
    doc("control-pathlen0-above-leaf", inter={"path_len": 0})
    # Chain rules.
    doc("int-no-basic-constraints", inter={"bc": None})
    doc("int-not-ca", inter={"bc": "ee"})
    doc("int-key-usage-without-cert-sign", inter={"ku": usage(digital=True, crl=True)})
    doc("int-pathlen0-above-another-ca", inter={"path_len": 0}, second={})
    doc("int-unknown-critical-extension", inter={"extra": [UNKNOWN]})
    doc("int-name-constraints", inter={"extra": [x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)]})
    doc("int-expired", inter={"na": NOW - DAY})
    doc("leaf-is-ca", leaf={"bc": "ca", "ku": CA_USAGE})
    doc("leaf-without-digital-signature", leaf={"ku": usage(cert_sign=True)})
    doc("leaf-unknown-critical-extension", leaf={"extra": [UNKNOWN]})
    doc("leaf-expired", leaf={"nb": NOW - 3 * HOUR, "na": NOW - HOUR})
    doc("leaf-not-yet-valid", leaf={"nb": NOW + HOUR, "na": NOW + 3 * HOUR})
    doc("leaf-p256", curve=ec.SECP256R1())
    # COSE protected header.
    doc("cose-alg-es256", protected=cbor2.dumps({1: -7}))
    doc("cose-extra-kid", protected=cbor2.dumps({1: -35, 4: b"kid"}))
    doc("cose-crit-label", protected=cbor2.dumps({1: -35, 2: [99]}))
    doc("cose-alg-as-text-label", protected=cbor2.dumps({"1": -35}))
    doc("cose-duplicate-alg", protected=bytes([0xA2, 0x01, 0x38, 0x22, 0x01, 0x26]))  # {1: -35, 1: -7}
    doc("cose-empty-protected", protected=b"")
    # Payload types and PCR maps (all signed).
    doc("pcrs-text-indexes", over={"pcrs": {str(k): v for k, v in PCRS.items()}})
    doc("pcrs-without-pcr8", over={"pcrs": {k: v for k, v in PCRS.items() if k != 8}})
    doc("pcrs-empty", over={"pcrs": {}})
    doc("pcrs-47-byte-value", over={"pcrs": {**PCRS, 3: b"\x01" * 47}})
    doc("pcrs-negative-index", over={"pcrs": {**PCRS, -1: b"\x01" * 48}})
    doc("pcrs-pcr0-truncated-to-32", over={"pcrs": {**PCRS, 0: PCRS[0][:32]}})
    doc("nonce-as-text", over={"nonce": NONCE.hex()})
    doc("nonce-as-array", over={"nonce": list(NONCE)})
    doc("nonce-null", over={"nonce": None})
    doc("user-data-as-array", over={"user_data": [1, 2]})
    doc("public-key-as-text", over={"public_key": "abc"})
    doc("certificate-in-tag-24", over={"certificate": cbor2.CBORTag(24, b"x")})
    # CBOR strictness of the signed payload.
    lk, lc, bundle = chain()
    plain = payload(lc, bundle)
    assert plain[0] == 0xA9  # map(9)
    write("payload-trailing-byte", sign1(lk, plain + b"\x00"))
    write("payload-duplicate-nonce", sign1(lk, b"\xaa" + plain[1:] + cbor2.dumps("nonce") + cbor2.dumps(b"\xff" * 32)))
    write("payload-duplicate-pcrs", sign1(lk, b"\xaa" + plain[1:] + cbor2.dumps("pcrs") + cbor2.dumps({0: b"\x00" * 48})))
    write("payload-indefinite-map", sign1(lk, b"\xbf" + plain[1:] + b"\xff"))
    pcrs = cbor2.dumps(PCRS)
    assert pcrs[0] == 0xB0  # map(16)
    dup_index = b"\xb1" + pcrs[1:] + cbor2.dumps(0) + cbor2.dumps(b"\x00" * 48)
    write("pcrs-duplicate-index", sign1(lk, plain.replace(pcrs, dup_index, 1)))
    # Envelope.
    write("envelope-tag-98", b"\xd8\x62" + sign1(lk, plain))
    write("envelope-five-items", sign1(lk, plain, envelope=lambda p, b, s: cbor2.dumps([p, {}, b, s, b""])))
    write("envelope-indefinite-array", sign1(lk, plain, envelope=lambda p, b, s: b"\x9f" + cbor2.dumps(p) + b"\xa0" + cbor2.dumps(b) + cbor2.dumps(s) + b"\xff"))
    write("envelope-97-byte-signature", sign1(lk, plain, envelope=lambda p, b, s: cbor2.dumps([p, {}, b, s + b"\x00"])))
    # Keys: the COSE signature by another key; a look-alike root.
    write("cose-signed-by-another-key", sign1(p384(), plain))
    other = p384()
    other_root = cert("root", "root", other, other, NOW - 365 * DAY, NOW + 365 * DAY)
    ok = p384()
    oi = cert("int1", "root", ok, other, NOW - 30 * DAY, NOW + 30 * DAY)
    olk = p384()
    olc = cert("leaf", "int1", olk, ok, NOW - HOUR, NOW + 2 * HOUR, bc="ee", ku=LEAF_USAGE)
    write("look-alike-root", sign1(olk, payload(olc, [other_root, oi])))
    write("look-alike-chain-under-trusted-root", sign1(olk, payload(olc, [ROOT, other_root, oi])))
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump({"now": int(NOW.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000), "pcrs": {f"PCR{i}": PCRS[i].hex() for i in (0, 1, 2, 8)},
                   "nonce": NONCE.hex(), "cases": cases}, f)


main()
