#!/usr/bin/env bash
# Build-checks docker/Dockerfile and docker/examples/*/Dockerfile on a machine without a Docker engine:
# `podman build --isolation=chroot --pull=never`, from base images made locally (nothing is pulled from a
# container registry). What it does, in order:
#   1. a Debian bookworm minbase image from debootstrap (root needed; cached as localhost/ea-check/debian)
#   2. stand-ins for the public base images the Dockerfiles name, built FROM that image:
#        node:20-bookworm-slim     ← this machine's node 20 binary, npm and headers copied to /usr/local, user node
#        python:3.12-slim-bookworm ← Debian's python3 + python3-venv (Python 3.11)
#        eclipse-temurin:21-jdk/jre← Debian's openjdk-17 jdk/jre headless, linked at /opt/java/openjdk
#   3. docker/Dockerfile (agent layer: apt-get python3/make/g++, npm ci from the npm registry, addon build,
#      esbuild bundle) and the three examples, the base images passed as --build-arg
#   4. a smoke stage per example (RUN inside the built image, since `podman run` does not work here): the addon
#      loads; `enclave-agent run --listen tcp:0,0 --nsm simulator -- <the image's app>` reports "agent healthy"
#      and exits 0 on SIGTERM; `run` with the defaults (vsock, /dev/nsm) refuses in one line outside an enclave
#   5. `podman save` of each example and scripts/check-image-size.sh on the tarball
# Exit 0 with "skipped: ..." when podman (or debootstrap, for the first base image) is missing, so CI may run it
# anywhere. Cache: $ENCLAVE_CHECK_CACHE (default /var/tmp/enclave-agent-check). Env: DEBIAN_MIRROR,
# CHECK_BUILD_TIMEOUT (seconds per build, default 1200), CHECK_KEEP_TARBALLS=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ENCLAVE_CHECK_CACHE:-/var/tmp/enclave-agent-check}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TIMEOUT=${CHECK_BUILD_TIMEOUT:-1200}
P=localhost/ea-check

say() { echo "check-dockerfiles: $*"; }
build() { timeout "$TIMEOUT" podman build --isolation=chroot --pull=never --quiet "$@"; }

if ! command -v podman >/dev/null 2>&1; then echo "skipped: podman not found"; exit 0; fi
mkdir -p "$CACHE"

# ---- 1. Debian base -------------------------------------------------------------------------------------------
if ! podman image exists "$P/debian:bookworm"; then
  if ! command -v debootstrap >/dev/null 2>&1; then echo "skipped: debootstrap not found (needed once for the local base image)"; exit 0; fi
  if [ "$(id -u)" -ne 0 ]; then echo "skipped: debootstrap needs root (needed once for the local base image)"; exit 0; fi
  say "debootstrap bookworm (minbase) from $MIRROR"
  rm -rf "$CACHE/rootfs"
  if ! debootstrap --variant=minbase bookworm "$CACHE/rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -5 "$CACHE/debootstrap.log"; exit 1
  fi
  tar -C "$CACHE/rootfs" -c . | podman import --quiet - "$P/debian:bookworm" >/dev/null
  rm -rf "$CACHE/rootfs"
fi

# ---- 2. stand-ins for the public base images -----------------------------------------------------------------
standin() { # name, containerfile text [, context dir]
  local name=$1 text=$2 ctx=${3:-$CACHE/ctx-empty}
  if podman image exists "$P/$name"; then return; fi
  say "base stand-in $name"
  mkdir -p "$ctx"
  printf '%s\n' "$text" >"$ctx/Containerfile"
  build -t "$P/$name" -f "$ctx/Containerfile" "$ctx" >/dev/null
}

NODE_BIN=$(readlink -f "$(command -v node)")
case $("$NODE_BIN" --version) in v20.*) ;; *) echo "check-dockerfiles: this machine's node is $("$NODE_BIN" --version); the node stand-in needs v20" >&2; exit 1 ;; esac
if ! podman image exists "$P/node:20-bookworm-slim"; then
  ctx=$CACHE/ctx-node
  rm -rf "$ctx"
  mkdir -p "$ctx/usr/local/bin" "$ctx/usr/local/lib/node_modules" "$ctx/usr/local/include"
  npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
  cp "$NODE_BIN" "$ctx/usr/local/bin/node"
  cp -a "$npm_dir" "$ctx/usr/local/lib/node_modules/npm"
  cp -a "$(dirname "$NODE_BIN")/../include/node" "$ctx/usr/local/include/node"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ctx/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ctx/usr/local/bin/npx"
  # npm trusts node's bundled CAs; a machine whose HTTPS goes through an intercepting proxy needs its own
  # bundle too: the host's goes into npm's global config of the stand-in (never into the Dockerfiles).
  mkdir -p "$ctx/usr/local/etc"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/usr/local/etc/host-ca-certificates.crt"
    echo 'cafile=/usr/local/etc/host-ca-certificates.crt' >"$ctx/usr/local/etc/npmrc"
  fi
  standin node:20-bookworm-slim "FROM $P/debian:bookworm
COPY usr/local/ /usr/local/
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \\
 && node --version && npm --version
CMD [\"node\"]" "$ctx"
fi
standin python:3-bookworm "FROM $P/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*"
standin jdk:17-bookworm "FROM $P/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jdk-headless && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /opt/java && ln -s /usr/lib/jvm/java-17-openjdk-amd64 /opt/java/openjdk"
standin jre:17-bookworm "FROM $P/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /opt/java && ln -s /usr/lib/jvm/java-17-openjdk-amd64 /opt/java/openjdk"

# ---- 3. the Dockerfiles ---------------------------------------------------------------------------------------
# The build context is staged: exactly the files docker/Dockerfile copies, nothing else of the checkout.
stage=$CACHE/ctx-agent
rm -rf "$stage"
mkdir -p "$stage/scripts" "$stage/native" "$stage/docker"
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$stage/"
cp "$ROOT/scripts/build-native.mjs" "$stage/scripts/"
cp -a "$ROOT/native/binding.gyp" "$ROOT/native/src" "$stage/native/"
cp -a "$ROOT/src" "$stage/src"
cp "$ROOT/docker/Dockerfile" "$ROOT/docker/enclave-agent.sh" "$ROOT/docker/Dockerfile.dockerignore" "$stage/docker/"
# The image runs `npm ci`: a lockfile it refuses (e.g. optional packages missing from it) fails here, clearly.
if ! (cd "$stage" && npm ci --dry-run --ignore-scripts --no-audit --no-fund --userconfig /dev/null >"$CACHE/npm-ci-dry-run.log" 2>&1); then
  echo "check-dockerfiles: \`npm ci\` fails on the repository's package-lock.json:" >&2
  grep -v '^npm notice' "$CACHE/npm-ci-dry-run.log" | head -8 >&2
  exit 1
fi
say "docker/Dockerfile (agent layer)"
build -t "$P/enclave-agent:check" --build-arg "NODE_IMAGE=$P/node:20-bookworm-slim" \
  --ignorefile "$stage/docker/Dockerfile.dockerignore" -f "$stage/docker/Dockerfile" "$stage" >/dev/null
AGENT=(--build-arg "AGENT_IMAGE=$P/enclave-agent:check")
say "docker/examples/node"
build -t "$P/example-node:check" "${AGENT[@]}" "$ROOT/docker/examples/node" >/dev/null
say "docker/examples/python"
build -t "$P/example-python:check" "${AGENT[@]}" --build-arg "PYTHON_IMAGE=$P/python:3-bookworm" "$ROOT/docker/examples/python" >/dev/null
say "docker/examples/java"
build -t "$P/example-java:check" "${AGENT[@]}" --build-arg "JDK_IMAGE=$P/jdk:17-bookworm" --build-arg "JRE_IMAGE=$P/jre:17-bookworm" \
  "$ROOT/docker/examples/java" >/dev/null

# ---- 4. smoke: run the agent inside each image (a RUN step stands in for `podman run`) -------------------------
ctx=$CACHE/ctx-smoke
rm -rf "$ctx"
mkdir -p "$ctx"
cat >"$ctx/smoke.sh" <<'SMOKE'
#!/bin/sh
# Inside the image: the agent runs the image's app over TCP with the NSM simulator, reports healthy, drains.
set -eu
app_port=$1; shift
agent=/opt/enclave-agent/bin/enclave-agent
/opt/enclave-agent/bin/node -e 'require("/opt/enclave-agent/native/enclave_native.node")'
mkdir -p /tmp/smoke && cd /tmp/smoke
printf '[app]\nport = %s\n[api]\nport = 0\n' "$app_port" > enclave.toml
if "$agent" run --config enclave.toml --nsm device -- true > default.out 2>&1; then echo "smoke: run with /dev/nsm missing should fail"; exit 1; fi
grep -q 'enclave-agent run: /dev/nsm not found' default.out || { cat default.out; exit 1; }
PORT=$app_port "$agent" run --config enclave.toml --listen tcp:0,0 --nsm simulator --state-dir /tmp/smoke/state -- "$@" > run.out 2>&1 &
pid=$!
i=0
until grep -q '"msg":"agent healthy"' run.out; do
  i=$((i + 1))
  if [ "$i" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then echo "smoke: no 'agent healthy'"; cat run.out; kill -9 "$pid" 2>/dev/null || true; exit 1; fi
  sleep 0.1
done
kill -TERM "$pid"
code=0; wait "$pid" || code=$?
[ "$code" -eq 0 ] || { echo "smoke: exit $code after SIGTERM"; cat run.out; exit 1; }
grep -q '"msg":"agent stopped"' run.out
echo "smoke: healthy, drained, exit 0: $*"
SMOKE
free_port() { "$NODE_BIN" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
smoke() { # image, app command...
  local image=$1; shift
  local port args=""
  port=$(free_port)
  for a in "$@"; do args="$args \"$a\""; done
  printf 'FROM %s\nCOPY smoke.sh /tmp/smoke.sh\nRUN sh /tmp/smoke.sh %s %s\n' "$image" "$port" "$args" >"$ctx/Containerfile"
  if ! timeout "$TIMEOUT" podman build --isolation=chroot --pull=never --no-cache -f "$ctx/Containerfile" "$ctx" >"$CACHE/smoke.log" 2>&1; then
    tail -40 "$CACHE/smoke.log"
    say "smoke FAILED: $image"
    exit 1
  fi
  grep '^smoke:' "$CACHE/smoke.log" | sed 's/^/check-dockerfiles: /'
}
smoke "$P/example-node:check" /usr/bin/setpriv --reuid=node --regid=node --init-groups -- /usr/local/bin/node /app/server.js
smoke "$P/example-python:check" /usr/bin/setpriv --reuid=app --regid=app --clear-groups -- /opt/venv/bin/python /app/app.py
smoke "$P/example-java:check" /usr/bin/setpriv --reuid=app --regid=app --clear-groups -- /opt/java/openjdk/bin/java -jar /app/app.jar

# ---- 5. image size ---------------------------------------------------------------------------------------------
for name in enclave-agent example-node example-python example-java; do
  tarball=$CACHE/$name.tar
  rm -f "$tarball"
  podman save --quiet --format docker-archive -o "$tarball" "$P/$name:check"
  "$ROOT/scripts/check-image-size.sh" "$tarball"
  [ "${CHECK_KEEP_TARBALLS:-0}" = 1 ] || rm -f "$tarball"
done
say "all Dockerfiles built, smoke-tested and size-checked"
