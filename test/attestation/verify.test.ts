import { defineVerifyTests } from './verify-cases.ts';

defineVerifyTests('node, WebCrypto');
