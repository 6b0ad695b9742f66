#!/usr/bin/env bash
# A Docker engine from Debian's packages, for the container tests (tests/containers) and
# scripts/docker-base-images.sh. Installs what is missing (docker.io: dockerd, containerd,
# runc; docker-compose; debootstrap), starts dockerd in the background when no engine
# answers, and waits until one does. An engine that already answers is left as it is.
#
#   scripts/docker-engine.sh          # as root (apt-get, dockerd)
#
# dockerd runs with --iptables=false --ip-forward=false: containers on one Compose network
# reach each other over their bridge, which needs neither, and the machine's firewall and
# forwarding, which network tests sharing the machine rely on, stay as they were. So
# containers reach nothing outside the machine: builds that fetch packages use
# `docker build --network host`. Compose networks come from 10.213.0.0/16, a range of
# their own. dockerd outlives this script (stop it with `kill $(cat /var/run/docker.pid)`).
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/etl-dockerd.log}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

# setsid and no inherited descriptors: dockerd is nobody's child and holds no caller's pipe.
setsid dockerd \
    --iptables=false --ip-forward=false \
    --bip 10.213.255.1/24 --default-address-pool base=10.213.0.0/16,size=24 \
    </dev/null >>"$LOG" 2>&1 &

for _ in $(seq 120); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
echo "dockerd did not answer within 60 s: see $LOG" >&2
exit 1
