#!/usr/bin/env bash
# `make kube-play-check`: the kustomize base and the Helm chart's default render, and both in
# Redis Sentinel mode (overlays/redis-sentinel, ci/sentinel-values.yaml), run as pods with
# `podman kube play` on a private podman network, then checked the way the kubelet and a user
# would:
#   - every startup, liveness and readiness probe of the render passes, run as the kubelet
#     would (httpGet from inside the pod, tcpSocket, exec), within PROBE_SECONDS;
#   - in Sentinel mode, every Sentinel names the same primary and sees all the replicas and
#     the other Sentinels; the primary's Redis is frozen (podman pause), a replica must be
#     promoted (within PROBE_SECONDS tries, 30 more for each time a Sentinel entered TILT mode,
#     at most 3; the Sentinel's events are printed), and the old primary, thawed, must be made
#     a replica of the new one (then the messages below go through the promoted primary);
#   - the backend answers through its Service name: `guestbook-loadtest messages` from a
#     container on the same network posts COUNT messages to http://<backend>:8080 and finds each
#     exactly once; the client answers /fetch with status ok through http://<client>:8081.
# scripts/kube_play.py adapts the render to podman (each Deployment/StatefulSet becomes one pod
# named after its Service, so the manifests' own URLs resolve) and lists what it leaves out:
# Services as such, replicas beyond one, the HPA, PodDisruptionBudgets, NetworkPolicies,
# ServiceAccounts, the helm test hooks and prometheus-adapter need a real cluster.
# Images: `make images` (built here when missing). Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/guestbook-deploy-tools}
export PATH=$TOOLS/bin:$PATH
PY=$TOOLS/venv/bin/python
REGISTRY=${REGISTRY:-ghcr.io/guestbook}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
PROBE_SECONDS=${PROBE_SECONDS:-90}
COUNT=${COUNT:-200}

step() { printf '\n--> %s\n' "$*"; }
die() { echo "kube-play-check: $*" >&2; exit 1; }
for tool in podman kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (scripts/deploy-tools.sh; apt-get install podman)"
done
[[ -x $PY ]] || die "no $PY: run scripts/deploy-tools.sh"

for name in guestbook-backend guestbook-client guestbook-loadtest; do
  podman image exists "$REGISTRY/$name:$VERSION" || { scripts/images.sh; break; }
done
podman image exists redis:7.0.15-bookworm || timeout 60 podman pull -q redis:7.0.15-bookworm >/dev/null 2>&1 ||
  scripts/local-base-images.sh redis:7.0.15-bookworm

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-play.XXXXXX")
network=""
played=""
frozen=""
cleanup() {
  # A paused container can be neither stopped nor cleaned up by kube down.
  [[ -z $frozen ]] || podman unpause "$frozen" >/dev/null 2>&1 || true
  if [[ -n $played ]]; then
    podman kube down "$played" >/dev/null 2>&1 || true
    # kube down leaves the volumes (the PVCs and ConfigMap volumes) it created.
    local volume
    for volume in $(cat "$work/volumes" 2>/dev/null); do podman volume rm -f "$volume" >/dev/null 2>&1 || true; done
  fi
  [[ -z $network ]] || podman network rm -f "$network" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

in_pod() { # in_pod POD CONTAINER COMMAND...: run a command in a played container
  podman exec "$1-$2" "${@:3}"
}

http_probe() { # http_probe POD CONTAINER PORT PATH: the kubelet's httpGet (2xx/3xx passes)
  in_pod "$1" "$2" bash -c "exec 3<>/dev/tcp/127.0.0.1/$3 &&
    printf 'GET $4 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 &&
    head -n 1 <&3 | grep -Eq ' (2|3)[0-9][0-9] '" 2>/dev/null
}

sentinel_pods() {
  podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -- '-redis-sentinel-'
}

sentinel_logs() { # what each Sentinel logged, for a failover that did not happen in time
  local pod
  for pod in $(sentinel_pods); do
    echo "--- $pod" >&2
    podman logs --tail 25 "$pod-sentinel" >&2 2>&1 || true
  done
}

tilts_since() { # tilts_since TIME: the most TILT periods any one Sentinel entered since TIME
  local pod count most=0
  for pod in $(sentinel_pods); do
    count=$(podman logs --since "$1" "$pod-sentinel" 2>&1 | grep -c '+tilt ' || true)
    ((count > most)) && most=$count
  done
  echo "$most"
}

sentinel_failover() { # sentinel_failover NAME PRIMARY SENTINEL_POD
  local name=$1 primary=$2 sentinel_pod=$3 now="" role=""
  step "$name: the primary's Redis frozen; the Sentinels promote a replica; thawed, it rejoins as a replica"
  # Frozen (podman pause: the cgroup freezer), as a hung process or a partitioned node: the
  # Sentinels' pings go unanswered. Not stopped: podman drops a stopped container's name from
  # its DNS at once, where a cluster keeps a crashed pod's record (the headless Services
  # publish not-ready addresses), and Sentinel, which resolves names synchronously, then
  # stalled on every lookup that podman's DNS and the upstream resolver left unanswered (40 s
  # for one lookup, measured), into TILT: promotions after 29-57 s, and none within 223 s in
  # CI. Not killed: podman would restart a killed container (restartPolicy Always) before
  # the Sentinels' 5 s, and then nothing fails over.
  local since
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  podman pause "$primary-redis" >/dev/null
  frozen="$primary-redis"
  local stopped=$SECONDS tries=$PROBE_SECONDS tilts=0 seen
  # TILT: a Sentinel whose timer ran over 2 s late (the host did not run it, or its clock
  # jumped) trusts nothing and acts on nothing for 30 s, by Sentinel's design; CI machines
  # have stalled every Sentinel for 25 s. Each TILT period (at most 3) adds 30 tries, and
  # says so: those 30 s say nothing of the manifests under test.
  for ((i = 0; i < tries; i++)); do
    now=$(in_pod "$sentinel_pod" sentinel redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1 || true)
    [[ -n $now && $now != "$primary" ]] && break
    sleep 1
    if ((i + 1 == tries)); then
      seen=$(tilts_since "$since")
      if ((seen > tilts && tilts < 3)); then
        tilts=$((seen < 3 ? seen : 3))
        tries=$((PROBE_SECONDS + 30 * tilts))
        echo "a Sentinel entered TILT mode $seen time(s) since the freeze: $tries tries, not $PROBE_SECONDS"
      fi
    fi
  done
  if [[ -z $now || $now == "$primary" ]]; then
    sentinel_logs
    die "$name: no replica promoted within $tries tries ($((SECONDS - stopped)) s) of freezing $primary"
  fi
  # What Sentinel did, and when, for the record of a slow failover.
  podman logs --since "$since" "$sentinel_pod-sentinel" 2>&1 |
    grep -E '[+-](sdown|odown|tilt|try-failover|failover-end|switch-master) ' | sed 's/^/  /' || true
  echo "the Sentinels promoted $now about $((SECONDS - stopped)) s after $primary froze"
  # Thawed, the old primary still believes it is one; the Sentinels see it and make it a
  # replica of the new primary (+convert-to-slave), discarding what it holds by a full sync.
  podman unpause "$primary-redis" >/dev/null
  frozen=""
  for ((i = 0; i < PROBE_SECONDS; i++)); do
    role=$(in_pod "$primary" redis redis-cli info replication 2>/dev/null |
      tr -d '\r' | awk -F: '$1 == "role" || $1 == "master_host" {printf "%s ", $2}' || true)
    [[ $role == "slave $now " ]] && break
    sleep 1
  done
  [[ $role == "slave $now " ]] || die "$name: $primary came back as '$role', not a replica of $now"
  echo "$primary, thawed, is a replica of $now (the Sentinels converted it)"
  # Every replica, the other one included, must follow the new primary: WAIT counts only those.
  local want replicas=""
  want=$(($(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -c -- '-redis-[0-9]*\.') - 1))
  for ((i = 0; i < PROBE_SECONDS; i++)); do
    replicas=$(in_pod "$now" redis redis-cli info replication 2>/dev/null | tr -d '\r' |
      grep -c '^slave[0-9]*:.*state=online' || true)
    ((replicas == want)) && break
    sleep 1
  done
  if ((replicas != want)); then
    local pod
    for pod in $(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -- '-redis-'); do
      echo "== $pod"
      in_pod "$pod" "$([[ $pod == *-redis-sentinel-* ]] && echo sentinel || echo redis)" sh -c \
        'redis-cli -p ${0} info replication 2>/dev/null | grep -E "^(role|master_host|master_link_status|slave[0-9])"' \
        "$([[ $pod == *-redis-sentinel-* ]] && echo 26379 || echo 6379)" || true
    done
    podman logs "$sentinel_pod-sentinel" 2>&1 | grep -E ' [+-][a-z-]+ ' | tail -n 30
    die "$name: $now has $replicas replicas online after $PROBE_SECONDS s, not $want"
  fi
  echo "$now has all $want replicas online"
}

check_render() { # check_render NAME < manifests
  local name=$1
  step "$name: adapting the render for podman kube play"
  "$PY" scripts/kube_play.py "$work/$name-probes.sh" >"$work/$name.yaml"
  network=gb-kube-play-$$
  podman network create "$network" >/dev/null
  "$PY" -c 'import sys, yaml
print("\n".join(d["metadata"]["name"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] in ("PersistentVolumeClaim", "ConfigMap")))' \
    "$work/$name.yaml" >"$work/volumes"

  step "$name: podman kube play"
  played=$work/$name.yaml
  podman kube play --network "$network" "$played" >"$work/$name-play.log" 2>&1 ||
    { cat "$work/$name-play.log"; die "$name: podman kube play failed"; }
  podman pod ps --filter "network=$network" --format '{{.Name}} {{.Status}} {{.NumberOfContainers}} containers'

  step "$name: every probe passes (within $PROBE_SECONDS s)"
  local probe ok
  while read -r probe; do
    eval "$probe"  # sets pod container kind and one of path/port, tcp, exec (from kube_play.py, shell-quoted)
    ok=0
    for ((i = 0; i < PROBE_SECONDS; i++)); do
      if [[ -n ${path:-} ]]; then http_probe "$pod" "$container" "$port" "$path" && ok=1
      elif [[ -n ${tcp:-} ]]; then in_pod "$pod" "$container" bash -c "exec 3<>/dev/tcp/127.0.0.1/$tcp" 2>/dev/null && ok=1
      else in_pod "$pod" "$container" "${exec[@]}" >/dev/null 2>&1 && ok=1
      fi
      ((ok)) && break
      sleep 1
    done
    ((ok)) || { podman logs --tail 20 "$pod-$container" || true; die "$name: $pod/$container $kind failed for $PROBE_SECONDS s"; }
    echo "$pod/$container $kind: passes ${path:+GET $path :$port}${tcp:+tcp :$tcp}${exec:+exec ${exec[*]}}"
    unset path port tcp exec
  done <"$work/$name-probes.sh"

  local sentinels
  sentinels=$(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -- '-redis-sentinel-[0-9]*\.' || true)
  if [[ -n $sentinels ]]; then
    step "$name: the Sentinels agree on the primary and see every replica and each other"
    local redis_pods sentinel_pod master want_replicas want_peers got
    redis_pods=$(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -c -- '-redis-[0-9]*\.')
    want_replicas=$((redis_pods - 1))
    want_peers=$(($(wc -l <<<"$sentinels") - 1))
    for sentinel_pod in $sentinels; do
      got=""
      # Sentinels find replicas and peers through the primary, every 10 s and 2 s: a bounded wait.
      for ((i = 0; i < PROBE_SECONDS; i++)); do
        got=$(in_pod "$sentinel_pod" sentinel redis-cli -p 26379 --raw SENTINEL master mymaster 2>/dev/null |
          paste - - | awk -F'\t' '$1 == "ip" || $1 == "flags" || $1 == "num-slaves" || $1 == "num-other-sentinels" {printf "%s=%s ", $1, $2}')
        [[ $got == *"flags=master num-slaves=$want_replicas num-other-sentinels=$want_peers "* ]] && break
        sleep 1
      done
      echo "$sentinel_pod: $got"
      [[ $got == *"flags=master num-slaves=$want_replicas num-other-sentinels=$want_peers "* ]] ||
        die "$name: $sentinel_pod does not see a healthy primary with $want_replicas replicas and $want_peers other Sentinels"
      master=${master:-${got%% *}}
      [[ ${got%% *} == "$master" ]] || die "$name: the Sentinels disagree on the primary (${got%% *}, $master)"
    done
    sentinel_failover "$name" "${master#ip=}" "$(head -n 1 <<<"$sentinels")"
  fi

  step "$name: the services answer through their Service names"
  local backend client
  backend=$(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -- '-backend$' | head -n 1)
  client=$(podman pod ps --filter "network=$network" --format '{{.Name}}' | grep -- '-client$' | head -n 1)
  podman run --rm --network "$network" "$REGISTRY/guestbook-loadtest:$VERSION" messages \
    --target "http://$backend:8080" --count "$COUNT" --concurrency 16 --idempotent-retries >"$work/messages.txt" 2>&1 ||
    { cat "$work/messages.txt"; die "$name: messages through http://$backend:8080 lost or duplicated some"; }
  grep -iE 'verdict|lost|acknowledged' "$work/messages.txt" | sed 's/^ */  /' | head -n 4
  local fetched
  fetched=$(podman run --rm --network "$network" --entrypoint bash "$REGISTRY/guestbook-loadtest:$VERSION" -c \
    "exec 3<>/dev/tcp/$client/8081 && printf 'GET /fetch HTTP/1.1\r\nHost: $client\r\nConnection: close\r\n\r\n' >&3 && cat <&3")
  grep -q '"status":"ok"' <<<"$fetched" || { echo "$fetched"; die "$name: /fetch through http://$client:8081 did not answer ok"; }
  echo "GET http://$client:8081/fetch: $(tail -n 1 <<<"$fetched")"

  step "$name: podman kube down"
  cleanup
  work=$(mktemp -d "${TMPDIR:-/tmp}/kube-play.XXXXXX")
  played=""
  network=""
}

# Rendered to files first: a pipe would run check_render in a subshell, out of the EXIT trap's reach.
renders=$(mktemp -d "${TMPDIR:-/tmp}/kube-renders.XXXXXX")
trap 'cleanup; rm -rf "$renders"' EXIT
kubectl kustomize deploy/kustomize/base >"$renders/kustomize-base.yaml"
helm template gb helm/guestbook >"$renders/helm-default.yaml"
kubectl kustomize deploy/kustomize/overlays/redis-sentinel >"$renders/kustomize-sentinel.yaml"
helm template gb helm/guestbook -f helm/guestbook/ci/sentinel-values.yaml >"$renders/helm-sentinel.yaml"
# RENDERS: a subset, by name (e.g. RENDERS="helm-sentinel").
for render in ${RENDERS:-kustomize-base helm-default kustomize-sentinel helm-sentinel}; do
  check_render "$render" <"$renders/$render.yaml"
done
step "kube-play-check passed: every render ran as pods, passed its probes and answered"
