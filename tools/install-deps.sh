#!/usr/bin/env bash
# Installs what Patro needs to build and test, from Debian's packages. Run as root.
# (ZeroC Ice is for patro-bench's Ice peer only: meson option ice, built where present;
# beanstalkd and redis-server for its job-queue peers only, found in PATH when it runs; openssl
# makes the certificates of its Ice-over-TLS peer.)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# A machine that already runs sshd (one reached over ssh) keeps it; one where this script installs
# openssh-server gets it stopped and disabled below.
services="beanstalkd redis-server"
dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q "install ok installed" ||
  services="$services ssh"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  g++ clang meson ninja-build pkg-config \
  libzmq3-dev cppzmq-dev zlib1g-dev flatbuffers-compiler libflatbuffers-dev libboost-dev doctest-dev \
  libcli11-dev nlohmann-json3-dev libsystemd-dev debhelper dh-python lintian mmdebstrap dpkg-dev curl clang-format libclang-rt-14-dev \
  iproute2 procps openssl python3-zmq python3-flatbuffers python3-pytest systemd strace logrotate \
  libzeroc-ice-dev zeroc-ice-compilers beanstalkd redis-server \
  openssh-server openssh-client nftables >/dev/null
# beanstalkd and redis-server are patro-bench's optional job-queue peers (skipped where absent).
# The bench starts its own, on free loopback ports with data directories of its own, so the
# system services the packages install are stopped and disabled rather than left listening.
# openssh-server and nftables are for tests/integration/ssh_spawn_test.cpp (spawn through ssh
# alone), which runs an sshd of its own in a network namespace it makes: an sshd this script
# installed is stopped and disabled too, so the machine does not start listening on port 22.
for service in $services; do
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  else
    service "$service" stop >/dev/null 2>&1 || true
    update-rc.d "$service" disable >/dev/null 2>&1 || true
  fi
done
