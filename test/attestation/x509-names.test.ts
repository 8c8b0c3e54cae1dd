// sameName (x509.ts): the byte-equality fast path for issuer/subject matching must not change which names match —
// byte-identical DER names match, and names that differ only in encoding still match through pkijs's RFC 5280
// comparison, as before the fast path; different names never match.
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { describe, expect, it } from 'vitest';
import { sameName } from '../../src/attestation/x509.ts';

function decodedName(cn: string, type: 'utf8' | 'printable' = 'utf8'): pkijs.RelativeDistinguishedNames {
  const value = type === 'utf8' ? new asn1js.Utf8String({ value: cn }) : new asn1js.PrintableString({ value: cn });
  const built = new pkijs.RelativeDistinguishedNames({ typesAndValues: [new pkijs.AttributeTypeAndValue({ type: '2.5.4.3', value })] });
  // Round-trip through DER, as names are when they come out of a parsed certificate.
  return new pkijs.RelativeDistinguishedNames({ schema: asn1js.fromBER(built.toSchema().toBER()).result });
}

describe('sameName', () => {
  it('matches byte-identical names', () => {
    expect(sameName(decodedName('aws.nitro-enclaves'), decodedName('aws.nitro-enclaves'))).toBe(true);
  });

  it('matches names that differ only in encoding or case, as pkijs isEqual does', () => {
    const a = decodedName('Nitro CA', 'utf8');
    const b = decodedName('nitro  ca', 'printable');
    expect(a.isEqual(b)).toBe(true);
    expect(sameName(a, b)).toBe(true);
  });

  it('does not match different names', () => {
    expect(sameName(decodedName('aws.nitro-enclaves'), decodedName('aws.nitro-enclave'))).toBe(false);
  });
});
