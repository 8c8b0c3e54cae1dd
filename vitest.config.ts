import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'all', include: ['test/**/*.test.ts'] } },
      {
        // The hot paths again without the native addon (what a machine without a compiler, or macOS, runs): the
        // node:crypto AEAD, the JS int-array loops and the JS egress relay must give the same bytes and behaviour.
        extends: true,
        test: {
          name: 'no-addon',
          include: ['test/noise/**/*.test.ts', 'test/wire/**/*.test.ts', 'test/responder/**/*.test.ts', 'test/egress/explicit-proxy.test.ts', 'test/egress/host-dialer.test.ts'],
          // The addon is hidden on purpose here, so CI's ENCLAVE_AGENT_REQUIRE_ADDON=1 does not apply to this project.
          env: { ENCLAVE_AGENT_NATIVE_ADDON: '/nonexistent/enclave_native.node', ENCLAVE_AGENT_REQUIRE_ADDON: '0' },
        },
      },
    ],
  },
});
