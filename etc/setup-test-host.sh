#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (a clean CI
# machine has none of them). Idempotent: installs only what is missing.
# Needs root; without it, says what is missing and leaves the tests to skip
# (outside CI) or fail (CI=true).
#
# Also sets up the one-machine test "HPC site" of tests/hpc_site.py (Slurm,
# munge, MariaDB for slurmdbd, two PAM+OATH sshd "login nodes"): a test user
# and the config files from etc/hpc/ at their system paths. No service is
# started here: the tests run their own daemons.
set -euo pipefail
cleanup=()
trap 'rm -f "${cleanup[@]}"' EXIT
here=$(cd "$(dirname "$0")" && pwd)

# command -> Debian package
declare -A want=(
    [chromium]=chromium
    # the docker tests run dockerd of their own (tests/docker_engine.py)
    [dockerd]=docker.io
    # the agent image is a debootstrapped Debian (etc/docker/build-agent-image.sh)
    [debootstrap]=debootstrap
    # certificates of the TCP+TLS test engine
    [openssl]=openssl
    # the sandbox of local runs (agent/sandbox.py); setpriv and env are in
    # util-linux and coreutils, which every Debian has
    [bwrap]=bubblewrap
    # real third-party codes (agent/parsers, tests/data/lammps, tests/data/gromacs)
    [lmp]=lammps
    [mpirun]=openmpi-bin
    [gmx]=gromacs
)
# Debian packages of the test HPC site (checked with dpkg); the login
# node's python3 has tornado (the agent) and numpy (its analysis worker)
hpc_pkgs=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server
    openssh-server libpam-oath oathtool python3-tornado python3-numpy)

missing=()
for c in "${!want[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("${want[$c]}")
done
installed=" $(dpkg-query -W -f='${db:Status-Status}:${Package} ' \
    "${hpc_pkgs[@]}" 2>/dev/null || true) "
for pkg in "${hpc_pkgs[@]}"; do
    [[ $installed == *" installed:$pkg "* ]] || missing+=("$pkg")
done

if [[ $(id -u) != 0 ]]; then
    ((${#missing[@]})) \
        && echo "setup-test-host: not root; missing Debian packages: ${missing[*]}" >&2
    exit 0
fi

if ((${#missing[@]})); then
    echo "setup-test-host: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # no package may start a service (docker.io would start the system's
    # dockerd, mariadb-server its mariadbd): the tests start what they
    # need, with their own paths
    p=/usr/sbin/policy-rc.d
    if [[ ! -e $p ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$p"
        chmod 755 "$p"
        cleanup+=("$p")
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- the test HPC site (tests/hpc_site.py) ----
hpc=$here/hpc

# install SRC as DEST (mode, owner) unless it is there with that content
put() { # put SRC DEST MODE OWNER
    local src=$1 dest=$2 mode=$3 owner=$4
    if ! cmp -s "$src" "$dest"; then
        install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dest"
        echo "setup-test-host: wrote $dest" >&2
    elif [[ $(stat -c '%a %U:%G' "$dest") != "$mode $owner" ]]; then
        chmod "$mode" "$dest"
        chown "$owner" "$dest"
    fi
}

# the test user; its home is the site's "shared filesystem"
user=simhpc
pass=simhpc-pass-1
if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --home-dir /home/$user --shell /bin/bash "$user"
    echo "$user:$pass" | chpasswd
    echo "setup-test-host: created user $user" >&2
elif ! python3 -W ignore -c '
import crypt, sys
h = next(l.split(":")[1] for l in open("/etc/shadow") if l.startswith(sys.argv[1] + ":"))
sys.exit(crypt.crypt(sys.argv[2], h) != h)' "$user" "$pass"; then
    echo "$user:$pass" | chpasswd
    echo "setup-test-host: reset the password of $user" >&2
fi

# Slurm: the node is this machine, by its short hostname
host=$(hostname -s)
tmp=$(mktemp)
cleanup+=("$tmp")
sed "s/@HOST@/$host/g" "$hpc/slurm.conf" > "$tmp"
put "$tmp" /etc/slurm/slurm.conf 644 root:root
put "$hpc/slurmdbd.conf" /etc/slurm/slurmdbd.conf 600 slurm:slurm
put "$hpc/cgroup.conf" /etc/slurm/cgroup.conf 644 root:root

# munge: a key if the system has none
if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -m 700 -o munge -g munge /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    echo "setup-test-host: made /etc/munge/munge.key" >&2
fi

# OATH secret of the test user. pam_oath records the last code used in this
# file, so it is compared on the secret, not on the whole text (the tests
# rewrite it at start too)
install -d -m 700 /etc/simvisor-hpc
secret=$(awk '$2 == "simhpc" { print $4 }' "$hpc/users.oath")
if ! awk -v s="$secret" '$2 == "simhpc" && $4 == s { f = 1 } END { exit !f }' \
    /etc/simvisor-hpc/users.oath 2>/dev/null; then
    install -m 600 -o root -g root "$hpc/users.oath" /etc/simvisor-hpc/users.oath
    echo "setup-test-host: wrote /etc/simvisor-hpc/users.oath" >&2
fi

# the two "login node" sshds: sshd names its PAM service after its program
# name, so each runs through its own symlink with its own PAM file
for shape in append prompt; do
    put "$hpc/pam-$shape" /etc/pam.d/simvisor-sshd-$shape 644 root:root
    link=/usr/local/sbin/simvisor-sshd-$shape
    [[ $(readlink "$link" 2>/dev/null) == /usr/sbin/sshd ]] \
        || ln -sfn /usr/sbin/sshd "$link"
done
