#!/usr/bin/env bash
# Stand-ins for the images the Dockerfiles and deploy/compose start from, built from Debian's
# packages (mmdebstrap -> podman import) for a machine that reaches Debian's archive but no image
# registry. Each gets the exact name the Dockerfiles and compose use, and holds the same upstream
# version as that tag (the compose tags are pinned to what Debian 12 ships for this reason):
#
#   debian:12.12-slim                   minbase bookworm, docs/man/locales left out as in -slim
#   redis:7.0.15-bookworm               Debian's redis-server 7.0.15; user redis is 999:999 as in
#                                       the official image (kustomize and Helm run it as 999);
#                                       /data owned by redis; no /etc/redis (the official image
#                                       has none; kube mounts its ConfigMap there); an
#                                       entrypoint that adds --protected-mode no when started
#                                       without a config file, as the official image's does;
#                                       Sentinel is the same binary (`redis-server FILE
#                                       --sentinel`), so no redis-sentinel package
#   prom/prometheus:v2.42.0             Debian's prometheus 2.42.0; user nobody, /prometheus
#   oliver006/redis_exporter:v1.45.0    Debian's prometheus-redis-exporter 1.45.0
#
# Not made: the Rust builder (rust:1.91.1-bookworm). No toolchain that new can be installed
# inside a container here; `make images` builds the binaries on the host instead (the offline
# fallback, docs/deploy.md "Containers").
#
# Where a registry is reachable none of this is needed: podman/docker pull the real images.
# Names are fully qualified (docker.io/...): podman's Docker-compatible API, which compose talks
# to, resolves a short name like redis:7.0.15-bookworm to docker.io/library/ only, never to the
# localhost/ a plain `podman import redis:...` would store it under. Names on the command line
# are the short ones (`scripts/local-base-images.sh redis:7.0.15-bookworm`).
# An image that already exists under its name is kept (FORCE=1 rebuilds); `podman rmi NAME`
# removes one. About 15-30 s an image. Needs root (mmdebstrap), podman, mmdebstrap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENGINE=${ENGINE:-podman}
SUITE=${SUITE:-bookworm}
FORCE=${FORCE:-0}
only=("$@")

for tool in mmdebstrap "$ENGINE"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "local-base-images: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/base-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# What -slim leaves out; the stand-ins leave it out too so sizes compare.
SLIM=(
  # merged /usr without the usrmerge package, which would pull in perl (26 MB)
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --aptopt='APT::Install-Recommends "false"'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)

wanted() { # wanted NAME: true when no names were given or NAME is one of them (short or full)
  ((${#only[@]} == 0)) && return 0
  local name short=${1#docker.io/}
  short=${short#library/}
  for name in "${only[@]}"; do [[ $name == "$1" || $name == "$short" ]] && return 0; done
  return 1
}

build() { # build NAME [mmdebstrap options...] -- [podman import --change ...]
  local name=$1
  shift
  wanted "$name" || return 0
  if [[ $FORCE != 1 ]] && "$ENGINE" image exists "$name" 2>/dev/null; then
    echo "$name: present (FORCE=1 rebuilds)"
    return 0
  fi
  local opts=() changes=()
  while (($# > 0)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
  (($# > 0)) && shift
  local change
  # `import` sets no environment; the official images set PATH, and kube play needs it to find
  # a relative entrypoint or command.
  changes+=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
  for change in "$@"; do changes+=(--change "$change"); done
  local start=$SECONDS old
  old=$("$ENGINE" image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  mmdebstrap --quiet --variant=minbase "${SLIM[@]}" "${opts[@]}" "$SUITE" "$work/rootfs.tar"
  "$ENGINE" import --quiet "${changes[@]}" "$work/rootfs.tar" "$name" >/dev/null
  rm -f "$work/rootfs.tar"
  # FORCE=1: the image this name held before is untagged now; do not leave it on the disk.
  [[ -z $old ]] || "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
  echo "$name: built in $((SECONDS - start)) s ($("$ENGINE" image inspect --format '{{.Size}}' "$name" | numfmt --to=iec) uncompressed)"
}

build docker.io/library/debian:12.12-slim -- 'CMD ["bash"]'

# The official image's entrypoint, reduced to what compose and Kubernetes rely on: started as
# `redis-server` with no config file, it turns protected mode off (the container network is the
# boundary); as root, it drops to the redis user.
cat >"$work/redis-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
  case " $* " in *".conf "*) ;; *) set -- "$@" --protected-mode no ;; esac
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
SH
build docker.io/library/redis:7.0.15-bookworm --include=redis-server,redis-tools \
  --customize-hook="install -m 0755 '$work/redis-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
  --customize-hook='chroot "$1" groupmod -g 999 redis && chroot "$1" usermod -u 999 -g 999 redis' \
  --customize-hook='mkdir -p "$1/data" && chroot "$1" chown -R redis:redis /data /var/lib/redis /var/log/redis' \
  --customize-hook='rm -rf "$1/etc/redis"' \
  -- 'WORKDIR /data' 'VOLUME /data' 'EXPOSE 6379' \
  'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["redis-server"]'

# As prom/prometheus: /bin/prometheus (/bin is /usr/bin, merged) as user nobody in /prometheus, the default config at
# /etc/prometheus/prometheus.yml.
build docker.io/prom/prometheus:v2.42.0 --include=prometheus \
  --customize-hook='mkdir -p "$1/prometheus" && chroot "$1" chown nobody:nogroup /prometheus' \
  -- 'USER nobody' 'WORKDIR /prometheus' 'VOLUME /prometheus' 'EXPOSE 9090' \
  'ENTRYPOINT ["/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'

# As oliver006/redis_exporter: /redis_exporter as a non-root user, on :9121.
build docker.io/oliver006/redis_exporter:v1.45.0 --include=prometheus-redis-exporter \
  --customize-hook='ln -sf /usr/bin/prometheus-redis-exporter "$1/redis_exporter"' \
  -- 'USER 59000:59000' 'EXPOSE 9121' 'ENTRYPOINT ["/redis_exporter"]'
