#!/bin/sh
# Launcher of the self-contained agent layer (/opt/enclave-agent: node binary, bundled CLI, native addon).
# `exec` so that node replaces this shell and receives the signals itself. No V8 heap flags: a small young
# generation (--max-semi-space-size=1) saves ~13 KiB per idle session but costs 15-24 % CPU per request
# (docs/performance.md, Memory); NODE_OPTIONS is the operator's way to choose memory instead.
: "${ENCLAVE_AGENT_NATIVE_ADDON:=/opt/enclave-agent/native/enclave_native.node}"
export ENCLAVE_AGENT_NATIVE_ADDON
# At most 2 glibc malloc arenas for the agent: V8's helper threads otherwise each grow one, and an idle attested
# session cost ~4 KiB more (the bench's memory rows). The agent drops it before starting the app (launcher-env.ts).
if [ -z "${MALLOC_ARENA_MAX+x}" ]; then
  MALLOC_ARENA_MAX=2 ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX=1
  export MALLOC_ARENA_MAX ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX
fi
exec /opt/enclave-agent/bin/node /opt/enclave-agent/dist/cli.js "$@"
