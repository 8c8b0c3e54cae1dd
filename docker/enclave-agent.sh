#!/bin/sh
# Launcher of the self-contained agent layer (/opt/enclave-agent: node binary, bundled CLI, native addon).
# `exec` so that node replaces this shell and receives the signals itself.
: "${ENCLAVE_AGENT_NATIVE_ADDON:=/opt/enclave-agent/native/enclave_native.node}"
export ENCLAVE_AGENT_NATIVE_ADDON
# At most 2 glibc malloc arenas for the agent: V8's helper threads otherwise each grow one, and an idle attested
# session cost ~4 KiB more (the bench's memory rows). The agent drops it before starting the app (launcher-env.ts).
if [ -z "${MALLOC_ARENA_MAX+x}" ]; then
  MALLOC_ARENA_MAX=2 ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX=1
  export MALLOC_ARENA_MAX ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX
fi
exec /opt/enclave-agent/bin/node --max-semi-space-size=1 /opt/enclave-agent/dist/cli.js "$@"
