// HTTP mode: the request pipeline between the session and the app.
export { createHttpForwarder } from './forwarder.ts';
export type { HttpForwarder, HttpModeOptions } from './forwarder.ts';
export { HttpModeError } from './errors.ts';
export type { HttpModeErrorCode } from './errors.ts';
export { createDuplexPair, PairEnd } from './duplex-pair.ts';
export { createStdoutLogSink, createFileLogSink, createStreamLogSink, createMemoryLogSink } from './log-sink.ts';
export type { LogSink, StreamLogSink, MemoryLogSink } from './log-sink.ts';
export { readBodyCapped } from './stages/decrypt.ts';
export type { DecryptStage, DecryptInput, DecryptOutput } from './stages/decrypt.ts';
export { AppHealthMonitor, HEALTH_PATH } from './stages/health.ts';
export type { AppState } from './stages/health.ts';
export { ATTESTATION_PATH } from './stages/attestation-endpoint.ts';
export { createHeaderMasker, maskedPath, trxRecord } from './stages/trx-log.ts';
export type { TrxRecordInput } from './stages/trx-log.ts';
export type { HeaderList } from './headers.ts';
