#!/usr/bin/env bash
# Checks a container image tarball against the Nitro Enclaves image-size limit before `nitro-cli build-enclave`.
#
#   scripts/check-image-size.sh IMAGE.tar [LIMIT_BYTES]
#
# IMAGE.tar is what `docker save IMAGE -o IMAGE.tar` or `podman save IMAGE -o IMAGE.tar` writes (docker-archive
# or OCI layout; layers plain, gzip or zstd). The measure is the sum of the UNCOMPRESSED layer tars: the image's
# filesystem is unpacked into the enclave image file (EIF) and loaded into enclave memory, so compression does
# not help. Files rewritten or deleted by later layers are counted in every layer that carries them, so the
# figure is an upper bound. LIMIT_BYTES defaults to $ENCLAVE_IMAGE_LIMIT_BYTES, else 2 GiB (2147483648).
# Exit 0: within the limit; 1: over it; 2: usage or unreadable tarball.
set -euo pipefail

usage() { echo "usage: $0 IMAGE.tar [LIMIT_BYTES]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
tarball=$1
limit=${2:-${ENCLAVE_IMAGE_LIMIT_BYTES:-2147483648}}
[[ $limit =~ ^[0-9]+$ ]] || { echo "check-image-size: LIMIT_BYTES must be an integer, found \"$limit\"" >&2; exit 2; }
[ -f "$tarball" ] || { echo "check-image-size: $tarball: no such file" >&2; exit 2; }
members=$(tar -tf "$tarball" 2>/dev/null) || { echo "check-image-size: $tarball is not a tar archive" >&2; exit 2; }

# Decompresses stdin when it starts with a gzip or zstd magic number, else passes it through.
decompress() {
  local magic
  magic=$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')
  case $magic in
    1f8b*) gzip -dc <"$1" ;;
    28b52ffd) zstd -dc <"$1" ;;
    *) cat "$1" ;;
  esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total=0
layers=0
while IFS= read -r member; do
  case $member in */ | *.json | */json | */VERSION | oci-layout | repositories) continue ;; esac
  tar -xOf "$tarball" "$member" >"$tmp/blob"
  # A layer is a tar archive (once decompressed); manifests and configs are JSON and are skipped.
  if decompress "$tmp/blob" | tar -t >/dev/null 2>&1; then
    size=$(decompress "$tmp/blob" | wc -c)
    total=$((total + size))
    layers=$((layers + 1))
  fi
done <<<"$members"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
if [ "$layers" -eq 0 ]; then
  echo "check-image-size: $tarball holds no layer tarballs (is it a docker/podman save archive?)" >&2
  exit 2
fi
if [ "$total" -gt "$limit" ]; then
  echo "$tarball: $layers layers, $(mib "$total") uncompressed, over the limit of $(mib "$limit"): TOO LARGE"
  exit 1
fi
echo "$tarball: $layers layers, $(mib "$total") uncompressed, within the limit of $(mib "$limit"): OK"
