#!/usr/bin/env bash
# Installs what Patro needs to build and test, from Debian's packages. Run as root.
# (ZeroC Ice is for patro-bench's Ice peer only: meson option ice, built where present.)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  g++ clang meson ninja-build pkg-config \
  libzmq3-dev cppzmq-dev zlib1g-dev flatbuffers-compiler libflatbuffers-dev libboost-dev doctest-dev \
  libcli11-dev nlohmann-json3-dev libsystemd-dev debhelper dh-python lintian mmdebstrap dpkg-dev curl clang-format libclang-rt-14-dev \
  iproute2 procps python3-zmq python3-flatbuffers python3-pytest systemd strace logrotate \
  libzeroc-ice-dev zeroc-ice-compilers >/dev/null
