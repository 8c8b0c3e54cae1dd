import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'dist-bundle/', 'node_modules/', 'native/build/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': ['error', { allow: ['error'] }],
      // TypeScript already reports undefined names; the rule misfires on Node globals in bin/*.js.
      'no-undef': 'off',
    },
  },
  // Type-aware rules for the TypeScript the project compiles (tsconfig.json): a promise nobody awaits or
  // handles, a promise where a callback's void was expected, `await` on a non-promise, `async` with no await.
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'scripts/**/*.ts', '*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/require-await': 'error',
    },
  },
  // Browser-safe code: the client SDK and the attestation verifier must not pull in Node built-ins.
  {
    files: ['src/client/**/*.ts', 'src/attestation/verify.ts', 'src/attestation/document.ts', 'src/util/**/*.ts', 'src/noise/**/*.ts', 'src/wire/{messages,schema,cbor-head,int-array,encode,cursor,decode}.ts'],
    // node.ts and the files it alone imports (tls-connect/tls-client, upgrade-tls-error, socket-pause) are the SDK's Node-only entry.
    ignores: ['src/noise/suite-node.ts', 'src/noise/native-aead.ts', 'src/client/node.ts', 'src/client/tls-connect.ts', 'src/client/tls-client.ts', 'src/client/upgrade-tls-error.ts', 'src/client/socket-pause.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['node:*'] }] },
  },
  // The CommonJS example shows require() of the package on purpose.
  { files: ['examples/**/*.cjs'], rules: { '@typescript-eslint/no-require-imports': 'off' } },
  { files: ['scripts/**', 'test/**', 'bin/**', 'examples/**', 'src/cli.ts', 'src/cli/**', 'docker/examples/**'], rules: { 'no-console': 'off' } },
);
