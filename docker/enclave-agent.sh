#!/bin/sh
# Launcher of the self-contained agent layer (/opt/enclave-agent: node binary, bundled CLI, native addon).
# `exec` so that node replaces this shell and receives the signals itself.
: "${ENCLAVE_AGENT_NATIVE_ADDON:=/opt/enclave-agent/native/enclave_native.node}"
export ENCLAVE_AGENT_NATIVE_ADDON
exec /opt/enclave-agent/bin/node --max-semi-space-size=1 /opt/enclave-agent/dist/cli.js "$@"
