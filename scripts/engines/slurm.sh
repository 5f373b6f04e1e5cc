#!/usr/bin/env bash
# A one-node SLURM cluster on loopback: munged, MariaDB, slurmdbd, slurmctld, slurmd.
#
#   scripts/engines/slurm.sh up   STATE_DIR   # start; writes STATE_DIR/env (source it: SLURM_CONF)
#   scripts/engines/slurm.sh down STATE_DIR   # stop every daemon it started, by its PID
#
# Everything (config, spool, database, logs, pid files) lives in STATE_DIR, every daemon
# listens on 127.0.0.1 only, and accounting goes through slurmdbd, which submitit needs to
# see a job that died without a result (sacct). Needs root and Debian's slurm-wlm, slurmdbd,
# munge and mariadb-server. Inside `unshare --net` also run `ip addr add 127.0.0.2/8 dev lo`
# first: with 127.0.0.1 as the only IPv4 address glibc's name lookups (AI_ADDRCONFIG) fail.
# Ports: SLURM_ENGINE_PORT_BASE (default 6817: ctld, +1 slurmd, +2 slurmdbd, +3 MariaDB).
set -euo pipefail

action=${1:?usage: slurm.sh up|down STATE_DIR}
state=${2:?usage: slurm.sh up|down STATE_DIR}
base=${SLURM_ENGINE_PORT_BASE:-6817}
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live there; a non-login root shell may lack it
ctld_port=$base slurmd_port=$((base + 1)) dbd_port=$((base + 2)) db_port=$((base + 3))

stop_pidfile() {  # stop the daemon whose pid is in $1: TERM, wait up to 20 s, then KILL
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

down() {
    for name in slurmd slurmctld slurmdbd mariadb munged; do
        stop_pidfile "$state/run/$name.pid"
    done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "slurm.sh: $what did not come up within $seconds s; logs in $state/log" >&2
    tail -n 20 "$state"/log/* >&2 || true
    return 1
}

write_configs() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$state/etc/slurm.conf" <<CONF
ClusterName=harness
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$state/munge/munge.socket
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
MpiDefault=none
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    cat >"$state/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
CommunicationParameters=NoInAddrAny
PidFile=$state/run/slurmdbd.pid
LogFile=$state/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$state/etc/slurmdbd.conf"
}

start_munge() {
    install -d -m 0755 -o munge -g munge "$state/munge"
    dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$state/munge/munge.key"; chmod 0400 "$state/munge/munge.key"
    touch "$state/run/munged.pid" "$state/log/munged.log"
    chown munge:munge "$state/run/munged.pid" "$state/log/munged.log"
    runuser -u munge -- munged --force --socket="$state/munge/munge.socket" \
        --key-file="$state/munge/munge.key" --pid-file="$state/run/munged.pid" \
        --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed"
    wait_for 10 munged munge --socket="$state/munge/munge.socket" -n
}

start_mariadb() {
    install -d -m 0755 -o mysql -g mysql "$state/mysql" "$state/run/mysqld"
    mariadb-install-db --no-defaults --datadir="$state/mysql" --user=mysql \
        --skip-test-db --skip-name-resolve >"$state/log/mariadb-install.log" 2>&1
    touch "$state/log/mariadb.log"; chown mysql:mysql "$state/log/mariadb.log"
    mariadbd --no-defaults --datadir="$state/mysql" --user=mysql --bind-address=127.0.0.1 \
        --port="$db_port" --socket="$state/run/mysqld/mysqld.sock" \
        --pid-file="$state/run/mysqld/mariadb.pid" --log-error="$state/log/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=32M --performance-schema=OFF \
        --innodb-log-file-size=16M >/dev/null 2>&1 &
    echo $! >"$state/run/mariadb.pid"
    wait_for 60 MariaDB mariadb --no-defaults --socket="$state/run/mysqld/mysqld.sock" -u root -e "SELECT 1"
    mariadb --no-defaults --socket="$state/run/mysqld/mysqld.sock" -u root -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE DATABASE slurm_acct_db;
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

up() {
    if [ -e "$state/run" ] && ls "$state"/run/*.pid >/dev/null 2>&1; then
        echo "slurm.sh: $state already holds a cluster; run 'slurm.sh down $state' first" >&2
        exit 1
    fi
    mkdir -p "$state"; chmod 0755 "$state"
    state=$(cd "$state" && pwd)
    mkdir -p "$state/etc" "$state/spool/ctld" "$state/spool/d" "$state/log" "$state/run"
    trap 'echo "slurm.sh: bring-up failed; stopping what started" >&2; down' ERR
    write_configs
    export SLURM_CONF="$state/etc/slurm.conf"
    start_munge
    start_mariadb
    slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 60 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$dbd_port"
    sacctmgr -i add cluster harness >/dev/null 2>&1 || true
    slurmctld -f "$state/etc/slurm.conf" -i
    wait_for 30 slurmctld scontrol ping
    slurmd -f "$state/etc/slurm.conf" -N localhost
    wait_for 30 "the node" bash -c "sinfo -h -o %T | grep -Eq '^(idle|mixed|allocated)'"
    trap - ERR
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" >"$state/env"
    echo "slurm.sh: one-node cluster up in $state (source $state/env)"
}

case $action in
    up) up ;;
    down) down ;;
    *) echo "usage: slurm.sh up|down STATE_DIR" >&2; exit 2 ;;
esac
