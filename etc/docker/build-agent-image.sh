#!/usr/bin/env bash
# Build the simvisor agent image from scratch: no registry is needed.
#
#   etc/docker/build-agent-image.sh [--rootfs-only] [--docker-host URL] [--tlsdir DIR]
#
# 1. debootstrap a minimal Debian (bookworm, minbase) with python3 and tini,
#    then apt-get install (in a chroot, no recommends) the site's codes:
#    the Debian packages of etc/docker/codes.list (LAMMPS, Open MPI,
#    GROMACS, numpy), trimmed (docs, locales, apt caches, perl); cached as
#    a tarball named by the base spec and the list, since this is the slow
#    part (110 to 125 s here: debootstrap 40 to 95 s, depending on the
#    mirror, the codes 40 to 60 s);
# 2. add the project's `agent` package (only agent/, never supervisor/) and
#    tornado (copied from the project's virtualenv, the version the tests ran)
#    into the system python's dist-packages, byte-compiled, a non-root
#    user `simvisor` (uid 10001) and Open MPI's settings for a container
#    (etc/docker/openmpi-mca-params.conf); cached as a tarball too;
# 3. `docker import` it as simvisor-agent:<version>-<hash of the inputs>, and
#    tag it simvisor-agent:<version>, unless the engine has that tag already.
#
# So it is rebuilt only when an input changes: this script, the base spec,
# the codes list, the MPI settings, agent/ or tornado. Prints the image tag
# on stdout (the last line).
# --rootfs-only builds the cached tarballs and needs no engine. Needs root
# (debootstrap, chroot). Cache: $SIMVISOR_CACHE_DIR, else ~/.cache/simvisor.
# Mirror: $SIMVISOR_DEBIAN_MIRROR, else http://deb.debian.org/debian.
# Codes: $SIMVISOR_CODES_LIST, else etc/docker/codes.list.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

rootfs_only=
docker_args=()
while (($#)); do
    case $1 in
        --rootfs-only) rootfs_only=1 ;;
        --docker-host) docker_args+=(-H "$2"); shift ;;
        --tlsdir)
            docker_args+=(--tlsverify --tlscacert "$2/ca.pem" --tlscert "$2/cert.pem" --tlskey "$2/key.pem")
            shift
            ;;
        *) echo "usage: $0 [--rootfs-only] [--docker-host URL] [--tlsdir DIR]" >&2; exit 2 ;;
    esac
    shift
done

suite=bookworm
variant=minbase
packages=python3,tini
codes_list=${SIMVISOR_CODES_LIST:-$root/etc/docker/codes.list}
mirror=${SIMVISOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
uid=10001
python=${PYTHON:-$root/.venv/bin/python}
cache=${SIMVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/simvisor}
version=$("$python" -c 'import agent; print(agent.VERSION)')
tornado_dir=$("$python" -c 'import os, tornado; print(os.path.dirname(tornado.__file__))')

_log() {
    echo "build-agent-image: $*" >&2
}

_hash_files() {
    # content and relative names of the regular files under $1 (no bytecode)
    (cd "$1" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64
}

_codes() {
    # the package names of the codes list, in order, without comments
    sed 's/#.*//' "$codes_list" | tr -s ' \t' '\n\n' | sed '/^$/d'
}

_install_codes() {
    # apt-get install the codes into the root filesystem $1 (dpkg's
    # scripts need perl and /proc: before the trim, with /proc mounted)
    local b=$1
    mount -t proc proc "$b/proc"
    # no package starts a service in the chroot
    printf '#!/bin/sh\nexit 101\n' > "$b/usr/sbin/policy-rc.d"
    chmod 755 "$b/usr/sbin/policy-rc.d"
    local rc=0
    {
        chroot "$b" apt-get update -q \
            && chroot "$b" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${codes[@]}"
    } >> "$work/codes.log" 2>&1 || rc=$?
    rm -f "$b/usr/sbin/policy-rc.d"
    umount "$b/proc"
    return "$rc"
}

_trim() {
    # what the agent and the codes never need: package caches and lists,
    # docs (and the JavaScript and fonts of HTML docs: GROMACS's MathJax,
    # 46 MB), locales, iconv modules, perl (only package scripts use it;
    # nothing is installed in a read-only container)
    local b=$1
    rm -rf "$b"/var/cache/apt/* "$b"/var/lib/apt/lists/* "$b"/var/cache/debconf/* \
        "$b"/usr/share/{doc,man,info,locale,javascript,fonts}/* "$b"/var/log/* \
        "$b"/usr/lib/x86_64-linux-gnu/{gconv,perl-base} "$b"/usr/bin/perl* \
        "$b"/usr/share/perl5 "$b"/usr/lib/python3.11/pydoc_data
}

_strip_toolchain() {
    # Dependencies pull in a compiler (libkim-api2 of LAMMPS wants
    # gfortran): nothing compiles in a read-only container, so the files of
    # these packages go, unless the codes list names one. Their dpkg
    # entries stay; nothing is installed in the image after its build.
    local b=$1 p f
    local strip=(gcc-12 cpp-12 gfortran-12 g++-12 libgcc-12-dev libgfortran-12-dev
        libstdc++-12-dev libc6-dev linux-libc-dev libcrypt-dev libnsl-dev
        libtirpc-dev rpcsvc-proto binutils binutils-common
        binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0 libgprofng0
        libasan8 libtsan2 liblsan0 libubsan1 libhwasan0 libitm1 libcc1-0)
    for p in "${strip[@]}"; do
        if [[ " ${codes[*]} " == *" $p "* ]] \
            || ! chroot "$b" dpkg-query -L "$p" > "$work/files" 2>/dev/null; then
            continue
        fi
        while read -r f; do
            if [[ -L $b$f || -f $b$f ]]; then rm -f "$b$f"; fi
        done < "$work/files"
    done
}

_check_codes() {
    # every program of the codes finds its libraries after the trim
    local b=$1 p f x
    for p in "${codes[@]}"; do
        for f in $(chroot "$b" dpkg-query -L "$p" | grep -E '^/usr/s?bin/'); do
            [[ -f $b$f && -x $b$f ]] || continue
            # (not a dynamic executable: a script, nothing to check)
            x=$(chroot "$b" ldd "$f" 2>&1) || continue
            if [[ $x == *"=> not found"* ]]; then
                _log "$p: $f misses libraries: $(grep 'not found' <<< "$x" | sort -u | tr -s ' \t\n' ' ')"
                return 1
            fi
        done
    done
}

if [[ ! -r $codes_list ]]; then
    _log "cannot read the codes list $codes_list"
    exit 1
fi
mapfile -t codes < <(_codes)
for c in "${codes[@]}"; do
    # a Debian package name, nothing an option or a shell could take
    if [[ ! $c =~ ^[a-z0-9][a-z0-9.+-]+$ ]]; then
        _log "not a Debian package name in $codes_list: $c"
        exit 1
    fi
done

mkdir -p "$cache"
# one build at a time per cache (test sessions may run side by side)
exec 9> "$cache/.lock"
flock 9
# the base is named by what makes it: its spec, the codes, and the steps
base_key=$(
    printf '%s\n' "$suite" "$variant" "$packages" "codes=${codes[*]}" \
        "$(declare -f _install_codes _trim _strip_toolchain _check_codes)" \
        | sha256sum | cut -c1-16
)
base_tar=$cache/agent-base-$base_key.tar
image_key=$(
    printf '%s\n' "$base_key" "$uid" "$(sha256sum < "$0")" \
        "$(_hash_files agent)" "$(_hash_files "$tornado_dir")" \
        "$(sha256sum < etc/docker/openmpi-mca-params.conf)" | sha256sum | cut -c1-12
)
image_tar=$cache/agent-image-$image_key.tar
tag=simvisor-agent:$version-$image_key

if [[ ! $rootfs_only ]] && docker "${docker_args[@]}" image inspect "$tag" >/dev/null 2>&1; then
    _log "up to date: $tag"
    echo "$tag"
    exit 0
fi
if [[ $(id -u) != 0 && ! -f $image_tar ]]; then
    _log "needs root to build the root filesystem (debootstrap, chroot)"
    exit 1
fi
work=$(mktemp -d "$cache/build.XXXXXX")
# a failed install may leave its /proc mounted: never rm -rf through it
trap 'umount "$work/base/proc" 2>/dev/null || true; rm -rf --one-file-system "$work"' EXIT

if [[ ! -f $base_tar ]]; then
    _log "debootstrap $suite variant=$variant include=$packages (once; cached)"
    s=$SECONDS
    debootstrap --variant="$variant" --include="$packages" "$suite" "$work/base" "$mirror" \
        > "$work/debootstrap.log" 2>&1 || {
        tail -20 "$work/debootstrap.log" >&2
        exit 1
    }
    _log "debootstrap done in $((SECONDS - s)) s"
    if ((${#codes[@]})); then
        _log "apt-get install ${codes[*]}"
        _install_codes "$work/base" || {
            tail -20 "$work/codes.log" >&2
            exit 1
        }
    fi
    _trim "$work/base"
    _strip_toolchain "$work/base"
    _check_codes "$work/base"
    rm -f "$cache"/agent-base-*.tar
    tar -C "$work/base" --numeric-owner -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/base"
    _log "base done in $((SECONDS - s)) s: $base_tar"
fi

if [[ ! -f $image_tar ]]; then
    s=$SECONDS
    r=$work/rootfs
    mkdir "$r"
    tar -C "$r" --numeric-owner -xf "$base_tar"
    site=$r/usr/local/lib/python3.11/dist-packages
    mkdir -p "$site"
    # the agent package only: the supervisor never goes into the image
    find agent \( -name '*.py' -o -name '*.json' \) -print0 \
        | tar --null -T - -cf - | tar -C "$site" -xf -
    cp -a "$tornado_dir" "$site/tornado"
    find "$site" -name __pycache__ -prune -exec rm -rf {} +
    # the root filesystem is read-only at run time: compile now
    chroot "$r" python3 -m compileall -q /usr/local/lib/python3.11/dist-packages
    echo "simvisor:x:$uid:$uid:simvisor agent:/tmp:/usr/sbin/nologin" >> "$r/etc/passwd"
    echo "simvisor:x:$uid:" >> "$r/etc/group"
    mkdir -p "$r/simvisor/run" "$r/simvisor/sock"
    # a volume mounted there (storage: volume) takes this owner and mode
    chown "$uid:$uid" "$r/simvisor/run"
    chmod 0700 "$r/simvisor/run"
    if [[ -d $r/etc/openmpi ]]; then
        # on a line of its own: Debian's file does not end with a newline
        { echo; cat etc/docker/openmpi-mca-params.conf; } >> "$r/etc/openmpi/openmpi-mca-params.conf"
    fi
    chroot "$r" python3 -c 'import agent.client, agent.codes.heat, tornado.websocket'
    rm -f "$cache"/agent-image-*.tar
    tar -C "$r" --numeric-owner -cf "$image_tar.tmp" .
    mv "$image_tar.tmp" "$image_tar"
    _log "image root filesystem done in $((SECONDS - s)) s: $image_tar"
fi
[[ $rootfs_only ]] && exit 0

s=$SECONDS
docker "${docker_args[@]}" import \
    -c "USER $uid:$uid" \
    -c 'ENV HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1' \
    -c 'WORKDIR /tmp' \
    -c 'ENTRYPOINT ["/usr/bin/tini", "--"]' \
    -c 'CMD ["python3", "-m", "agent", "--help"]' \
    -c "LABEL simvisor.image=$image_key" \
    "$image_tar" "$tag" >/dev/null
docker "${docker_args[@]}" tag "$tag" "simvisor-agent:$version"
_log "imported $tag in $((SECONDS - s)) s"
echo "$tag"
