#!/usr/bin/env bash
# Build a Python 3.11 base image from Debian bookworm's own packages, for machines that cannot pull
# python:3.11-slim-bookworm from Docker Hub but can reach a Debian mirror. The result stands in for the
# official image: python3.11 with venv and pip's bootstrap, `python` on the PATH, CA certificates, useradd.
#
#   images/base.sh BUILDER TAG      BUILDER: docker | podman | buildah
#
# Needs root (mmdebstrap in root mode) and mmdebstrap (apt-get install mmdebstrap). Takes ~30 s. Nothing is
# done when TAG already exists; remove it to rebuild (e.g. for Debian's security updates).
set -euo pipefail

builder=${1:?usage: images/base.sh BUILDER TAG}
tag=${2:?usage: images/base.sh BUILDER TAG}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

exists() {
  case $builder in
    docker) docker image inspect "$tag" >/dev/null 2>&1 ;;
    *) "$builder" inspect --type image "$tag" >/dev/null 2>&1 ;;
  esac
}

if exists; then
  echo "base image $tag exists"
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "error: building $tag needs mmdebstrap (apt-get install mmdebstrap)" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase plus Python; no Recommends; docs, man pages and locales are left out (copyright files stay), in
# this image and in whatever later stages install with dpkg; usrmerge (and the perl it pulled in) goes once
# /usr is merged; apt's lists are dropped (apt-get update first)
mmdebstrap --quiet --variant=minbase \
  --include=python3.11,python3.11-venv,python-is-python3,ca-certificates,passwd \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" apt-get purge -qq -y usrmerge libfile-find-rule-perl libnumber-compare-perl \
    libtext-glob-perl perl libperl5.36 perl-modules-5.36 libgdbm-compat4 >/dev/null' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$work/base.tar" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"

changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
case $builder in
  docker | podman) "$builder" import --quiet "${changes[@]}" "$work/base.tar" "$tag" >/dev/null ;;
  buildah)
    container=$(buildah from scratch)
    buildah add --quiet "$container" "$work/base.tar" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd python3 "$container"
    buildah commit --quiet --rm "$container" "$tag" >/dev/null
    ;;
  *)
    echo "error: unknown builder $builder" >&2
    exit 1
    ;;
esac
echo "built base image $tag from Debian bookworm"
