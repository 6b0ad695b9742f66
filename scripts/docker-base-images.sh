#!/usr/bin/env bash
# The base images the Dockerfile and docker-compose.yml name, on a machine whose Docker
# engine cannot pull them. For each: kept if already present, pulled if a registry
# answers, otherwise built from Debian's packages (scripts/base-images/*.Dockerfile) on a
# debian:bookworm-slim made with debootstrap, and tagged with the official name, so the
# project's files build and run unchanged. A stand-in says so in its description label.
#
#   scripts/docker-base-images.sh            # needs an engine: scripts/docker-engine.sh
#   scripts/docker-base-images.sh --force    # pull or rebuild even what is present
#
# Debian's packages come from $DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/base-images"

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN=debian:bookworm-slim
# Tag, then the stand-in's Dockerfile. The tags are the ones the project's files name
# (tests/integration/test_deploy_files.py checks that they match).
IMAGES=(
    "python:3.11-slim-bookworm python.Dockerfile"
    "postgres:15-bookworm postgres.Dockerfile"
    "redis:7-bookworm redis.Dockerfile"
    "rabbitmq:3 rabbitmq.Dockerfile"
)

force=false
case "${1:-}" in
    "") ;;
    --force) force=true ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

present() { [ "$force" = false ] && docker image inspect "$1" >/dev/null 2>&1; }

pulled() { timeout 600 docker pull --quiet "$1" >/dev/null 2>&1; }

size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

work=$(mktemp -d /var/tmp/etl-base-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Run a noisy command quietly; on failure show what it said.
quietly() {
    "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
}

# debian:bookworm-slim from debootstrap, made slim the way the official image is: no
# documentation but the copyright files, no man pages or translations, no apt lists or
# caches, and the same rules for every package installed on top of it.
debootstrap_debian() {
    local root=$work/root
    quietly debootstrap --variant=minbase bookworm "$root" "$MIRROR"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,groff,info,locale,lintian}/* \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/* "$root"/dev/* "$root"/proc/* "$root"/sys/* "$root"/tmp/*
    : >"$root/etc/resolv.conf"  # the engine mounts each container's own
    : >"$root/etc/hostname"
    tar --numeric-owner -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$DEBIAN" >/dev/null
    rm -rf "$root"
}

# This directory plus local-ca/: the host's locally added CA certificates (see
# python.Dockerfile for why).
build_context() {
    local context=$work/context
    if [ ! -d "$context" ]; then
        cp -r . "$context"
        mkdir -p "$context/local-ca"
        find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$context/local-ca/" \; \
            2>/dev/null || true
    fi
    echo "$context"
}

ensure() {  # TAG [DOCKERFILE]
    local tag=$1 dockerfile=${2:-} start=$SECONDS how
    if present "$tag"; then
        how="present"
    elif pulled "$tag"; then
        how="pulled"
    elif [ -z "$dockerfile" ]; then
        debootstrap_debian
        how="built with debootstrap"
    else
        # Once per script run, --force or not: every stand-in builds on the same Debian.
        if [ -z "$debian_ready" ]; then
            ensure "$DEBIAN"
            debian_ready=yes
        fi
        quietly docker build --network host --force-rm -f "$dockerfile" -t "$tag" "$(build_context)"
        how="built from Debian packages"
    fi
    printf '%-26s %-28s %8s  %3d s\n' "$tag" "$how" "$(size "$tag")" $((SECONDS - start))
}

debian_ready=
for entry in "${IMAGES[@]}"; do
    # shellcheck disable=SC2086  # "TAG DOCKERFILE" splits into two arguments
    ensure $entry
done
