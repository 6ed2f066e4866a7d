#!/usr/bin/env bash
# Build kubevolve's images with whichever builder this machine has: `make images`, or
#
#   images/build.sh [operator] [worker] [trainer]        (no names: all three)
#
# Each is tagged $REGISTRY/kubevolve-NAME:$VERSION (default localhost/kubevolve-worker:0.1.0, the version in
# pyproject.toml). Settings, from the environment:
#   BUILDER        docker | buildah | podman (default: the first of these that works here)
#   REGISTRY       the name prefix (default localhost); e.g. ghcr.io/kubevolve to push where the chart pulls
#   VERSION        the tag (default: pyproject.toml's version)
#   PYTHON_IMAGE   the Python base of all three (default: the Dockerfiles' python:3.11.11-slim-bookworm).
#                  When that cannot be pulled (no Docker Hub), images/base.sh builds a bookworm base with
#                  mmdebstrap and the images are built on it.
#   TORCH_WHEELS   a folder with the torch CPU wheel for the worker (buildah and podman mount it into the
#                  build; default: /opt/wheels when it holds one). Else the worker takes torch from
#                  TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu).
#   HOST_CERTS     a folder bound over /etc/ssl/certs while building (buildah and podman; default: this
#                  machine's /etc/ssl/certs), so that pip in the build trusts what pip here trusts (a proxy's
#                  CA); set it empty to build with the base image's own certificates.
set -euo pipefail
cd "$(dirname "$0")/.."

names=("$@")
((${#names[@]})) || names=(operator worker trainer)
for name in "${names[@]}"; do
  [ -f "images/$name/Dockerfile" ] || { echo "error: no image '$name' (images/$name/Dockerfile)" >&2; exit 2; }
done

if [ -z "${BUILDER:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker
  elif command -v buildah >/dev/null; then BUILDER=buildah
  elif command -v podman >/dev/null; then BUILDER=podman
  else
    echo "error: no image builder: install docker, buildah or podman (apt-get install buildah)" >&2
    exit 1
  fi
fi
REGISTRY=${REGISTRY:-localhost}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)}

args=()
if [ "$BUILDER" != docker ]; then
  # chroot isolation needs neither a container runtime's cgroups nor a network namespace; the empty ulimits
  # keep the runtime from raising limits it may not raise (in a container, say)
  args+=(--isolation chroot --layers)
  if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF=$(mktemp)
    trap 'rm -f "$CONTAINERS_CONF"' EXIT
    printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
    export CONTAINERS_CONF
  fi
  HOST_CERTS=${HOST_CERTS-/etc/ssl/certs}
  [ -n "$HOST_CERTS" ] && args+=(-v "$HOST_CERTS:/etc/ssl/certs:ro")
fi

exists() {
  if [ "$BUILDER" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else "$BUILDER" inspect --type image "$1" >/dev/null 2>&1; fi
}

if [ -z "${PYTHON_IMAGE:-}" ]; then
  default=$(sed -n 's/^ARG PYTHON_IMAGE=//p' images/operator/Dockerfile)
  if exists "$default" || "$BUILDER" pull -q "$default" >/dev/null 2>&1; then
    PYTHON_IMAGE=$default
  else
    PYTHON_IMAGE=localhost/kubevolve-python:3.11-bookworm
    echo "cannot pull $default: building on $PYTHON_IMAGE (Debian bookworm, images/base.sh)"
    images/base.sh "$BUILDER" "$PYTHON_IMAGE"
  fi
fi
args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")

worker_args=()
TORCH_WHEELS=${TORCH_WHEELS-$(ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 && echo /opt/wheels)}
if [ -n "$TORCH_WHEELS" ]; then
  [ "$BUILDER" != docker ] || { echo "error: docker cannot mount TORCH_WHEELS; set TORCH_INDEX_URL" >&2; exit 2; }
  worker_args+=(-v "$TORCH_WHEELS:/wheels:ro" --build-arg TORCH_WHEELS=/wheels)
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  worker_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi

built=()
for name in "${names[@]}"; do
  tag=$REGISTRY/kubevolve-$name:$VERSION
  extra=()
  [ "$name" = worker ] && extra=("${worker_args[@]}")
  echo "== $tag ($BUILDER, base $PYTHON_IMAGE)"
  start=$SECONDS
  case $BUILDER in
    docker) docker build "${args[@]}" "${extra[@]}" -f "images/$name/Dockerfile" -t "$tag" . ;;
    buildah) buildah bud "${args[@]}" "${extra[@]}" -f "images/$name/Dockerfile" -t "$tag" . ;;
    podman) podman build "${args[@]}" "${extra[@]}" -f "images/$name/Dockerfile" -t "$tag" . ;;
    *) echo "error: unknown BUILDER $BUILDER (docker, buildah or podman)" >&2; exit 2 ;;
  esac
  built+=("$tag $((SECONDS - start))")
done

echo "== built (size as the builder reports it, uncompressed; build seconds)"
for entry in "${built[@]}"; do
  read -r tag seconds <<<"$entry"
  if [ "$BUILDER" = docker ]; then size=$(docker image inspect -f '{{.Size}}' "$tag")
  else size=$("$BUILDER" inspect --type image -f '{{.ImageAnnotations}}' "$tag" >/dev/null && "$BUILDER" images --noheading --format '{{.Size}}' "$tag"); fi
  echo "$tag  $size  ${seconds}s"
done
