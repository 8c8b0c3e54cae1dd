// A keyring whose key agreements the test sees: the very Z buffers the ev: codec caches (ecdh-cache.ts), to check
// they are zeroed when they should be.
import { Keyring } from '../../src/crypto/keyring.ts';

export function watchedKeyring(): { keyring: Keyring; agreed: Buffer[] } {
  const keyring = Keyring.generate();
  const agreed: Buffer[] = [];
  const real = keyring.sharedSecret.bind(keyring);
  keyring.sharedSecret = (curve, peer, generation) => {
    const z = real(curve, peer, generation);
    agreed.push(z);
    return z;
  };
  return { keyring, agreed };
}
