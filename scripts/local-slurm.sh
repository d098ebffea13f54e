#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try profiles/slurm without a real cluster.
#
#   sudo scripts/local-slurm.sh start [--no-accounting] [--gpus N]
#   sudo scripts/local-slurm.sh status | stop
#
# Made for containers and CI runners (Debian/Ubuntu, root, no systemd, no cgroups): it installs
# slurm-wlm, munge, slurmdbd and mariadb-server with apt, writes /etc/slurm/*.conf (refusing to
# replace files it did not write) and starts the daemons in the background.
#
# Accounting: the Slurm executor plugin asks `sacct` for job states, and sacct needs slurmdbd.
# By default this starts MariaDB + slurmdbd, as on real clusters. With --no-accounting it does
# not, and profiles must set `slurm-status-command: squeue`; MinJobAge is kept at 300 s, above
# 3x the plugin's first status delay, or the plugin silently goes back to sacct and hangs.
#
# --gpus N (default 1) declares N fake GPUs (gres backed by empty files) so jobs asking for `--gpus=1` are
# scheduled; nothing makes a GPU appear, so torch runs on the CPU.
set -euo pipefail

MARK="# written by dreamgrid scripts/local-slurm.sh"
CONF_DIR=/etc/slurm
STATE=/var/lib/dreamgrid-slurm
LOGS=/var/log/slurm
CLUSTER=dreamgrid
ACCOUNT=dreamgrid
PARTITION=debug
USER_NAME=${SUDO_USER:-root}  # the user who will submit jobs

die() { echo "local-slurm: $*" >&2; exit 1; }

accounting=1
gpus=1
cmd=${1:-}
shift || true
while [[ $# -gt 0 ]]; do
  case $1 in
    --no-accounting) accounting=0 ;;
    --gpus) gpus=${2:?--gpus needs a number}; shift ;;
    *) die "unknown option '$1' (see the header of $0)" ;;
  esac
  shift
done

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  if [[ $accounting == 1 ]]; then
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
  fi
  [[ ${#missing[@]} == 0 ]] && return
  command -v apt-get >/dev/null || die "needs ${missing[*]}; install them (no apt-get here)"
  echo "local-slurm: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
}

# Write $1 from stdin unless a file we did not write is already there.
write_conf() {
  if [[ -e $1 ]] && ! grep -qF "$MARK" "$1"; then
    die "$1 exists and was not written by this script; move it away or use that cluster"
  fi
  { echo "$MARK"; cat; } >"$1"
}

# Daemons must not hold the caller's stdout/stderr open (a `| tail` would wait forever);
# their own log files say what went wrong.
daemon() { "$@" </dev/null >/dev/null 2>&1; }

start_munge() {
  pgrep -x munged >/dev/null && return
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  daemon runuser -u munge -- /usr/sbin/munged
}

start_accounting() {
  if ! pgrep -x mariadbd >/dev/null; then
    install -d -o mysql -g mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    (cd / && setsid -f mariadbd --user=mysql </dev/null >>"$LOGS/mariadb.log" 2>&1)
    for _ in $(seq 60); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    mariadb -e 'select 1' >/dev/null || die "MariaDB did not start, see $LOGS/mariadb.log"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  write_conf "$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  if ! pgrep -x slurmdbd >/dev/null; then
    daemon slurmdbd
    for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
    sacctmgr -n list cluster >/dev/null || die "slurmdbd did not answer, see $LOGS/slurmdbd.log"
  fi
}

register_account() {
  # Before slurmctld starts, so it registers with a known cluster.
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n list account format=account | grep -qw "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=local org=local >/dev/null
  [[ -n $(sacctmgr -n list assoc user="$USER_NAME" account="$ACCOUNT" format=user) ]] ||
    sacctmgr -i add user "$USER_NAME" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

write_slurm_conf() {
  local node host
  host=$(hostname -s)
  node=$(slurmd -C | head -1)  # NodeName=... CPUs=... RealMemory=...
  local mem=${node##*RealMemory=}
  mem=${mem%% *}
  local cpus=${node##*CPUs=}
  cpus=${cpus%% *}
  local gres_line="" gres_node=""
  if [[ $gpus -gt 0 ]]; then
    gres_line="GresTypes=gpu"
    gres_node=" Gres=gpu:$gpus"
    # gres/gpu counts device files (without File= the count is 0): empty files stand in.
    local i
    for ((i = 0; i < gpus; i++)); do
      touch "$STATE/fake-gpu$i"
      echo "NodeName=$host Name=gpu File=$STATE/fake-gpu$i"
    done |
      write_conf "$CONF_DIR/gres.conf"
  fi
  local acct="AccountingStorageType=accounting_storage/none"
  [[ $accounting == 1 ]] && acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux"
  write_conf "$CONF_DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
# No systemd or cgroups in a container: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
# >= 3x the executor plugin's first status delay (40 s), so squeue mode still sees ended jobs.
MinJobAge=300
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$acct
$gres_line
$node$gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts daemons)"
  install_packages
  install -d "$STATE/ctld" "$STATE/d" "$LOGS"
  start_munge
  write_slurm_conf  # before slurmdbd: sacctmgr reads it to find the dbd
  if [[ $accounting == 1 ]]; then
    start_accounting
    register_account
  fi
  pgrep -x slurmctld >/dev/null || daemon slurmctld -i
  pgrep -x slurmd >/dev/null || daemon slurmd
  for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && break
    sleep 0.5
  done
  sinfo -h -o %T | grep -qx idle || die "node not idle: $(sinfo 2>&1); see $LOGS/slurm*.log"
  echo "local-slurm: up: partition '$PARTITION', account '$ACCOUNT'," \
    "accounting $([[ $accounting == 1 ]] && echo slurmdbd || echo none), $gpus fake GPU(s)"
}

stop() {
  local pidfile
  for pidfile in "$STATE"/slurmd.pid "$STATE"/slurmctld.pid "$STATE"/slurmdbd.pid; do
    if [[ -s $pidfile ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  if pgrep -x mariadbd >/dev/null && [[ -e $CONF_DIR/slurmdbd.conf ]]; then
    mariadb-admin shutdown 2>/dev/null || true
  fi
  echo "local-slurm: stopped (munged left running)"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) die "usage: $0 start [--no-accounting] [--gpus N] | status | stop" ;;
esac
