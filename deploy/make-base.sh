#!/usr/bin/env sh
# A Debian 12 base image with python3 (3.11) and venv, built from Debian's packages: no container
# registry is reachable on these machines. Elsewhere pass BASE=python:3.11-slim-bookworm instead.
#   deploy/make-base.sh localhost/nlu-base:bookworm
set -eu
tag=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/base.tar"
podman import --quiet "$work/base.tar" "$tag" >/dev/null  # buildah has no import; same store
