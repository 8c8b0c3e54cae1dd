// sameName (x509.ts): byte-identical DER names match at once, names that differ only in encoding, case or spacing
// still match as pkijs's RFC 5280 comparison says they do (pkijs builds the names, independently of our reader);
// different names never match.
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { describe, expect, it } from 'vitest';
import { parseName, sameName, type Name } from '../../src/attestation/x509.ts';

function pkijsName(cn: string, type: 'utf8' | 'printable' = 'utf8'): pkijs.RelativeDistinguishedNames {
  const value = type === 'utf8' ? new asn1js.Utf8String({ value: cn }) : new asn1js.PrintableString({ value: cn });
  const built = new pkijs.RelativeDistinguishedNames({ typesAndValues: [new pkijs.AttributeTypeAndValue({ type: '2.5.4.3', value })] });
  // Round-trip through DER, as names are when they come out of a parsed certificate.
  return new pkijs.RelativeDistinguishedNames({ schema: asn1js.fromBER(built.toSchema().toBER()).result });
}

function decodedName(cn: string, type: 'utf8' | 'printable' = 'utf8'): Name {
  return parseName(new Uint8Array(pkijsName(cn, type).toSchema().toBER()));
}

describe('sameName', () => {
  it('matches byte-identical names', () => {
    expect(sameName(decodedName('aws.nitro-enclaves'), decodedName('aws.nitro-enclaves'))).toBe(true);
  });

  it('matches names that differ only in encoding or case, as pkijs isEqual does', () => {
    expect(pkijsName('Nitro CA', 'utf8').isEqual(pkijsName('nitro  ca', 'printable'))).toBe(true);
    const a = decodedName('Nitro CA', 'utf8');
    const b = decodedName('nitro  ca', 'printable');
    expect(sameName(a, b)).toBe(true);
  });

  it('does not match different names', () => {
    expect(sameName(decodedName('aws.nitro-enclaves'), decodedName('aws.nitro-enclave'))).toBe(false);
  });
});
