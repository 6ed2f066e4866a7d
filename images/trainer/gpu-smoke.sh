#!/usr/bin/env bash
# The trainer image on a GPU machine: nvidia-smi, a CUDA matmul and one DeepSpeed step (images/trainer/smoke.py
# --device cuda), run as a pod runs it: the image's uid 65532, read-only root, /scratch and /tmp as tmpfs.
#
#   images/trainer/gpu-smoke.sh [IMAGE]      (default: localhost/kubevolve-trainer:<pyproject version>)
#
# Needs docker with the NVIDIA container toolkit (--gpus all), or podman with the toolkit's CDI spec
# (--device nvidia.com/gpu=all). Prints one JSON line and exits 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${1:-localhost/kubevolve-trainer:$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)}
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then run=(docker run --gpus all)
elif command -v podman >/dev/null; then run=(podman run --device nvidia.com/gpu=all)
else echo "error: needs docker or podman with the NVIDIA container toolkit" >&2; exit 1; fi
exec "${run[@]}" --rm --read-only --tmpfs /scratch:uid=65532,gid=65532 --tmpfs /tmp --shm-size 1g \
  --entrypoint python "$image" /opt/kubevolve/smoke.py --device cuda
