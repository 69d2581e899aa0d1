#!/usr/bin/env bash
# `make images`: builds guestbook-backend, guestbook-loadtest and guestbook-client with podman (or
# docker when podman is absent), tagged as deploy/compose, kustomize and Helm name them.
#
# BINARIES=source    the standard path: the Dockerfiles compile inside RUST_IMAGE (pulled from
#                    a registry).
# BINARIES=prebuilt  the offline fallback: `cargo build --release --locked` on this host, the
#                    binaries and the host's CA bundle staged in target/image-bin/, copied in.
# BINARIES=auto      (default) source when RUST_IMAGE is present or can be pulled, else prebuilt.
# IMAGE_PROFILE=release (default) or debug: which cargo profile the prebuilt binaries come from
#                    (CI's compose check uses the debug binaries `make test` already built).
# Base images: when the runtime base cannot be found or pulled either, they are made from
# Debian's packages by scripts/local-base-images.sh (mmdebstrap; root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z ${ENGINE:-} ]]; then
  if command -v podman >/dev/null 2>&1; then ENGINE=podman; else ENGINE=docker; fi
fi
command -v "$ENGINE" >/dev/null 2>&1 || { echo "images: neither podman nor docker is installed" >&2; exit 1; }
BINARIES=${BINARIES:-auto}
REGISTRY=${REGISTRY:-ghcr.io/guestbook}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
RUST_IMAGE=${RUST_IMAGE:-rust:1.91.1-bookworm}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-debian:12.12-slim}
# A pull that cannot reach a registry should fail, not hang.
PULL_TIMEOUT=${PULL_TIMEOUT:-60}

have_or_pull() { # have_or_pull IMAGE: present locally, or pulled now
  "$ENGINE" image inspect "$1" >/dev/null 2>&1 && return 0
  timeout "$PULL_TIMEOUT" "$ENGINE" pull -q "$1" >/dev/null 2>&1
}

if ! have_or_pull "$RUNTIME_IMAGE"; then
  echo "images: $RUNTIME_IMAGE cannot be pulled; making the stand-ins from Debian's packages"
  ENGINE=$ENGINE scripts/local-base-images.sh
fi

if [[ $BINARIES == auto ]]; then
  if have_or_pull "$RUST_IMAGE"; then BINARIES=source; else BINARIES=prebuilt; fi
  echo "images: BINARIES=$BINARIES ($RUST_IMAGE $([[ $BINARIES == source ]] && echo present || echo 'cannot be pulled'))"
fi
case $BINARIES in
  source) ;;
  prebuilt)
    profile=${IMAGE_PROFILE:-release}
    case $profile in
      release) cargo build --release --locked -p guestbook-backend -p guestbook-client -p guestbook-loadtest ;;
      debug) cargo build --locked -p guestbook-backend -p guestbook-client -p guestbook-loadtest ;;
      *) echo "images: IMAGE_PROFILE is release or debug, not $profile" >&2; exit 1 ;;
    esac
    rm -rf target/image-bin
    mkdir -p target/image-bin
    # As the source path does: debug info out, symbols kept (Dockerfile.backend, builder stage).
    for bin in guestbook-backend guestbook-client guestbook-loadtest; do
      objcopy --strip-debug "target/$profile/$bin" "target/image-bin/$bin"
    done
    # Debian's ca-certificates bundle, as the rust image's would be.
    cp /etc/ssl/certs/ca-certificates.crt target/image-bin/
    ;;
  *) echo "images: BINARIES is source, prebuilt or auto, not $BINARIES" >&2; exit 1 ;;
esac

build() { # build NAME DOCKERFILE [TARGET]
  local name=$REGISTRY/$1:$VERSION target=()
  [[ -n ${3:-} ]] && target=(--target "$3")
  local start=$SECONDS old
  old=$("$ENGINE" image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  "$ENGINE" build --quiet -f "$2" "${target[@]}" -t "$name" \
    --build-arg BINARIES="$BINARIES" --build-arg RUST_IMAGE="$RUST_IMAGE" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --build-arg VERSION="$VERSION" . >/dev/null
  echo "$name: built in $((SECONDS - start)) s"
  # The image this name held before: untagged now, and the disk fills up otherwise.
  if [[ -n $old && $old != "$("$ENGINE" image inspect --format '{{.Id}}' "$name")" ]]; then
    "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
  fi
}
dangling() { "$ENGINE" images -q --no-trunc --filter dangling=true | sort; }
before=$(dangling)
build guestbook-backend Dockerfile.backend runtime
build guestbook-loadtest Dockerfile.backend loadtest
build guestbook-client Dockerfile.client runtime
# Prebuilt: the intermediate stage images these builds left are not worth keeping as a cache
# (copying the binaries takes seconds) and would pile up on the disk. Only those made here.
if [[ $BINARIES == prebuilt ]]; then
  mapfile -t made < <(comm -13 <(echo "$before") <(dangling))
  ((${#made[@]} == 0)) || "$ENGINE" rmi "${made[@]}" >/dev/null 2>&1 || true
fi
