#!/usr/bin/env bash
# TPU VM helper: create a pod slice, install this repository on every worker, run a config on all.
#
#   launch/tpu_vm.sh create                       # gcloud compute tpus tpu-vm create
#   launch/tpu_vm.sh setup                        # clone + pip install -e .[tpu] on --worker=all
#   launch/tpu_vm.sh run configs/wcse_math.py --workdir=/mnt/runs/math --config.x=y ...
#
# Settings come from the environment: TPU_NAME, ZONE, ACCELERATOR (e.g. v4-32), TPU_VERSION,
# REPO_URL (where workers clone this repository from), REPO_DIR (its folder on the workers).
set -euo pipefail
TPU_NAME="${TPU_NAME:-wcse}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
REPO_DIR="${REPO_DIR:-wcse_jax}"
on_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "$1"
}
case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --version="$TPU_VERSION" ;;
  setup)
    : "${REPO_URL:?set REPO_URL to where the workers can clone this repository from}"
    on_all "git clone $REPO_URL $REPO_DIR || git -C $REPO_DIR pull; cd $REPO_DIR && python3 -m pip install -e '.[tpu]'" ;;
  run)
    shift
    config="$1"; shift
    # Every worker runs the same command; jax.distributed.initialize() finds the pod by itself.
    on_all "cd $REPO_DIR && python3 -m wcse_jax.main --config=$config --config.distributed=true $*" ;;
  *)
    echo "usage: $0 create | setup | run CONFIG [--workdir=... --config.x=y ...]" >&2
    exit 2 ;;
esac
