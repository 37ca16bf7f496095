#!/usr/bin/env bash
# TPU VM launcher: a slice from a queued resource, this repository installed on every worker, an
# experiment run on all workers at once with distributed init, and the slice deleted again.
#
#   launch/tpu_vm.sh create                 # queue the slice (queued-resources create)
#   launch/tpu_vm.sh status                 # its state; setup once it is ACTIVE
#   launch/tpu_vm.sh setup                  # clone REPO_URL@REPO_REF, pip install -e '.[tpu]'
#   launch/tpu_vm.sh run CONFIG --workdir=DIR [--config.x=y ...]   # wcse_jax.main on all workers
#   launch/tpu_vm.sh stop                   # delete the queued resource and its TPU VM
#
# --dry-run (anywhere on the line) or DRY_RUN=1 prints the exact gcloud commands, shell-quoted,
# instead of running them.
#
# Settings, from the environment (defaults in brackets):
#   TPU_NAME         [wcse]          the TPU VM (node) id; the queued resource is "$TPU_NAME-qr"
#   ZONE             [us-central2-b]
#   PROJECT          [gcloud's configured project]
#   ACCELERATOR      [v4-32]         gcloud's accelerator type: v4-32, v5litepod-16, v5p-8, ...
#   RUNTIME_VERSION  [tpu-ubuntu2204-base]  the TPU VM image
#   PROVISIONING     [on-demand]     on-demand, spot or reserved (queued-resources create flags)
#   REPO_URL         [required by setup]    where every worker clones this repository from
#   REPO_REF         [main]          branch, tag or commit every worker checks out
#   REPO_DIR         [wcse_jax]      the checkout's folder on the workers
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "tpu_vm.sh: $*" >&2
  exit 2
}

DRY_RUN="${DRY_RUN:-0}"
args=()
for arg in "$@"; do
  # wcse_jax.main has no --dry-run flag, so taking it from anywhere is unambiguous.
  if [[ "$arg" == --dry-run ]]; then DRY_RUN=1; else args+=("$arg"); fi
done
set -- "${args[@]+"${args[@]}"}"

TPU_NAME="${TPU_NAME:-wcse}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROVISIONING="${PROVISIONING:-on-demand}"
REPO_REF="${REPO_REF:-main}"
REPO_DIR="${REPO_DIR:-wcse_jax}"
QUEUED="$TPU_NAME-qr"
where=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then where+=(--project="$PROJECT"); fi

# One argument as the shell would read it back: bare when it is plain, single-quoted otherwise
# (only the value of a --flag=value, for legibility).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

gc() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local out="gcloud" a
    for a in "$@"; do out+=" $(quote "$a")"; done
    echo "$out"
  else
    gcloud "$@"
  fi
}

on_all_workers() {
  gc compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$1"
}

verb="${1:-}"
case "$verb" in
  create)
    case "$PROVISIONING" in
      on-demand) mode=() ;;
      spot) mode=(--spot) ;;
      reserved) mode=(--reserved) ;;
      *) die "PROVISIONING=$PROVISIONING: expected on-demand, spot or reserved" ;;
    esac
    gc compute tpus queued-resources create "$QUEUED" --node-id="$TPU_NAME" "${where[@]}" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME_VERSION" \
      "${mode[@]+"${mode[@]}"}" ;;
  status)
    gc compute tpus queued-resources describe "$QUEUED" "${where[@]}" ;;
  setup)
    [[ -n "${REPO_URL:-}" ]] || die "setup needs REPO_URL: where the workers can clone this \
repository from (e.g. REPO_URL=https://github.com/you/wcse_jax.git)"
    dir="$(quote "$REPO_DIR")"
    # Every worker fetches the same ref and installs the pinned set plus jax[tpu] (libtpu).
    on_all_workers "set -e; test -d $dir/.git || git clone $(quote "$REPO_URL") $dir; \
git -C $dir fetch origin $(quote "$REPO_REF"); git -C $dir checkout --detach FETCH_HEAD; \
cd $dir && python3 -m pip install -e \".[tpu]\"" ;;
  run)
    shift
    [[ $# -ge 1 && "$1" != --* ]] || die "run needs a config: run CONFIG --workdir=DIR [...]"
    config="$1"
    shift
    workdir=0
    for arg in "$@"; do [[ "$arg" == --workdir=* ]] && workdir=1; done
    [[ "$workdir" == 1 ]] || die "run needs --workdir=DIR, a folder every worker can write \
(e.g. a GCS bucket mounted with gcsfuse)"
    flags=""
    for arg in "$@"; do flags+=" $(quote "$arg")"; done
    # The same command on every worker; jax.distributed.initialize() finds the slice by itself.
    on_all_workers "cd $(quote "$REPO_DIR") && python3 -m wcse_jax.main \
--config=$(quote "$config") --config.distributed=true$flags" ;;
  stop)
    # --force deletes the TPU VM with the queued resource; --quiet skips the confirmation.
    gc compute tpus queued-resources delete "$QUEUED" "${where[@]}" --force --quiet ;;
  -h|--help|help)
    usage ;;
  *)
    usage >&2
    exit 2 ;;
esac
