#!/usr/bin/env bash
# Makes the two base images `examples/deploy/Dockerfile` builds from, out of this machine's own
# files, for a machine that reaches no container registry (where `rust:1.95-bookworm` and
# `debian:bookworm-slim` cannot be pulled):
#
#   gitops-local/builder:<key>  this machine's C toolchain and libraries, its Rust toolchain
#                               (`rustc --print sysroot`) and its cargo registry (offline)
#   gitops-local/runtime:<key>  busybox-static, the C library the binary links to, CA certificates
#
# It prints the two build arguments to pass on:
#
#   docker build -f examples/deploy/Dockerfile -t gitops $(examples/deploy/local-bases.sh) .
#
# The key is a hash of what went in (the Rust version, Cargo.lock); an image of the same key is
# reused. Older keys are removed. Every image made here (and whatever a build makes from it)
# carries the label `gitops.local`, so that `docker image prune --filter label=gitops.local`
# finds the build's intermediate images.
#
# The builder holds this machine's /usr (programs, libraries, headers) and every crate in its
# cargo registry: it is for building here, never to be pushed anywhere. No credentials go in
# (of the cargo home, only registry/ is copied; of /etc, only what programs need to start).
#
# Needs: docker, tar, busybox-static (`/bin/busybox`), and a Rustup toolchain that builds gitops
# (x86_64 Debian-style paths).
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/../.."

sysroot=$(readlink -f "$(rustc --print sysroot)")
case $sysroot in
/usr | /usr/local | /)
    echo "local-bases.sh: rustc's sysroot is $sysroot; it needs a Rustup toolchain (its own directory)" >&2
    exit 1
    ;;
esac
cargo_home=$(readlink -f "${CARGO_HOME:-$HOME/.cargo}")
busybox=$(command -v busybox || true)
# ldd fails on a static executable ("not a dynamic executable").
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "local-bases.sh: needs a static busybox (Debian: apt-get install busybox-static)" >&2
    exit 1
fi
key=$( (rustc -vV; sha256sum <Cargo.lock; sha256sum <"$self") | sha256sum | cut -c1-12)
builder=gitops-local/builder:$key
runtime=gitops-local/runtime:$key

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# An image is imported as <tag>-partial and tagged only once the whole pipe succeeded (pipefail
# ends the script otherwise): a tar that failed must not leave a base later runs would take.
promote() {
    docker tag "$1-partial" "$1"
    docker image rm "$1-partial" >/dev/null
}

if ! exists "$builder"; then
    # Every crate Cargo.lock names in the registry the builder copies (the build is offline).
    cargo fetch --locked --quiet
    stage=$(mktemp -d)
    mkdir -m 1777 "$stage/tmp"
    # Merged /usr (Debian 12 and later): /bin, /lib and /lib64 are links into it. The Rust
    # toolchain goes to /usr/local/rust, the registry to /usr/local/cargo, as in rust:*
    # images (cargo finds rustc on PATH; rustc finds its libraries beside itself).
    echo "local-bases.sh: making $builder (once per Rust version and Cargo.lock)" >&2
    tar -C / -cf - \
        --exclude='usr/lib/x86_64-linux-gnu/dri' \
        --transform "s,^${sysroot#/},usr/local/rust," \
        --transform "s,^${cargo_home#/}/registry,usr/local/cargo/registry," \
        bin lib lib64 sbin \
        usr/bin usr/sbin usr/lib64 usr/lib/x86_64-linux-gnu usr/lib/gcc usr/libexec usr/include \
        usr/lib/os-release etc/os-release etc/alternatives etc/ld.so.conf etc/ld.so.conf.d \
        etc/ld.so.cache etc/passwd etc/group \
        "${sysroot#/}/bin" "${sysroot#/}/lib" \
        "${cargo_home#/}/registry/index" "${cargo_home#/}/registry/cache" \
        "${cargo_home#/}/registry/src" \
        -C "$stage" tmp |
        docker import \
            --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV CARGO_HOME=/usr/local/cargo' \
            --change 'ENV CARGO_NET_OFFLINE=true' \
            --change 'LABEL gitops.local=builder' \
            - "$builder-partial" >/dev/null
    promote "$builder"
    rm -rf "$stage"
fi

if ! exists "$runtime"; then
    echo "local-bases.sh: making $runtime" >&2
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    chmod 755 "$root"
    mkdir -p "$root"/{bin,lib/x86_64-linux-gnu,lib64,etc/ssl/certs,tmp,var/lib}
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1; do
        cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/"
    done
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
    # For forge reporting over HTTPS; absent without Debian's ca-certificates.
    if [ -e /etc/ssl/certs/ca-certificates.crt ]; then
        cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -cf - . |
        docker import \
            --change 'ENV PATH=/usr/local/bin:/bin' \
            --change 'LABEL gitops.local=runtime' \
            - "$runtime-partial" >/dev/null
    promote "$runtime"
fi

# Bases of other keys are of an older toolchain or lock file.
for repo in gitops-local/builder gitops-local/runtime; do
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" |
        grep -vx "$repo:$key" | xargs -r docker image rm >/dev/null 2>&1 || true
done

echo "--build-arg BUILDER=$builder --build-arg RUNTIME=$runtime"
