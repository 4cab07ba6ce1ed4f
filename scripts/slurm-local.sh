#!/bin/bash
# Install (if missing) and start a one-node SLURM for tests, CI and users trying hpc_tune on one machine.
#
#   scripts/slurm-local.sh          install if needed, (re)start with the config below, wait for an idle node
#   scripts/slurm-local.sh stop     stop slurmd and slurmctld (queued jobs are kept; munged keeps running)
#   scripts/slurm-local.sh status   print sinfo
#
# Safe to run twice: an up-to-date running cluster is left alone; a cluster running with another slurm.conf is
# stopped by its pid files, given this config and started again (AuthInfo changes need a full restart).
# Why the settings (docs: DESIGN §9): CPUs=8 with SlurmdParameters=config_overrides lets 4+ single-core tasks
# run at once on a 2-core machine; batch_sched_delay=0,sched_interval=2 starts jobs in under a second;
# AuthInfo=cred_expire=10 makes a requeued job run again after ~11 s instead of ~150 s.
set -euo pipefail

SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
WAIT_S=${SLURM_LOCAL_WAIT_S:-90}

say() { printf 'slurm-local: %s\n' "$*"; }
die() { printf 'slurm-local: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E -- "$0" "$@"
    fi
    die "must run as root (or with sudo available) to install and start SLURM daemons"
fi

NODE=$(hostname -s)

# --- helpers ---------------------------------------------------------------------------------------------------

# pid_of NAME PIDFILE: print the pid if PIDFILE names a live process called NAME (a stale file is ignored).
pid_of() {
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm") == "$name" ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1 # just killed, not yet reaped
    echo "$pid"
}

# Pid files as the running cluster's own config names them (another setup may have put them elsewhere).
conf_value() {
    local key=$1 default=$2 value=""
    if [[ -r $SLURM_CONF ]]; then
        value=$(sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/Ip" "$SLURM_CONF" | tail -n1)
    fi
    echo "${value:-$default}"
}

stop_daemon() {
    local name=$1 file=$2 pid i
    if ! pid=$(pid_of "$name" "$file"); then
        say "$name not running"
        rm -f "$file"
        return 0
    fi
    say "stopping $name (pid $pid, SIGTERM keeps queued jobs)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    say "$name (pid $pid) did not stop in 30 s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
    rm -f "$file"
}

stop_slurm() {
    stop_daemon slurmd "$(conf_value SlurmdPidFile "$SLURMD_PID")"
    stop_daemon slurmctld "$(conf_value SlurmctldPidFile "$CTLD_PID")"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    if ((${#missing[@]} == 0)); then
        say "packages present ($(slurmctld -V 2>/dev/null || echo slurm), munge)"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install slurm-wlm and munge by hand"
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    chown munge: "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge
    chown munge: /run/munge
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"
        return 0
    fi
    say "starting munged"
    runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

write_conf() {
    local mem_kb real_mb
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    real_mb=$((mem_kb * 8 / 10 / 1024))
    cat <<EOF
# Written by hpc_tune scripts/slurm-local.sh: a one-node SLURM for tests. Rerun the script after editing.
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
SchedulerParameters=batch_sched_delay=0,sched_interval=2
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=8 RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() {
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1
}

# After a SIGKILL the old slurmctld's helper (slurmscriptd) can linger for a moment and a new slurmctld may
# exit during startup without a word in its log: start it again until it answers.
wait_ctld() {
    local i pidfile
    pidfile=$(conf_value SlurmctldPidFile "$CTLD_PID")
    for ((i = 1; i <= WAIT_S * 2; i++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
        if ((i % 6 == 0)) && ! pid_of slurmctld "$pidfile" >/dev/null; then
            say "slurmctld exited during startup: starting it again"
            slurmctld || true
        fi
        sleep 0.5
    done
    tail -n 20 /var/log/slurm/slurmctld.log >&2 || true
    die "slurmctld not answering after ${WAIT_S} s (log above: /var/log/slurm/slurmctld.log)"
}

wait_idle() {
    local i state resumed=0
    for ((i = 0; i < WAIT_S * 2; i++)); do
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing)
            say "node $NODE is $state"
            return 0
            ;;
        down* | drain* | drained* | fail*)
            if ((resumed == 0)); then
                say "node $NODE is $state: resuming it"
                scontrol update NodeName="$NODE" State=RESUME 2>/dev/null \
                    || scontrol update NodeName="$NODE" State=IDLE 2>/dev/null || true
                resumed=1
            fi
            ;;
        esac
        sleep 0.5
    done
    tail -n 20 /var/log/slurm/slurmd.log >&2 || true
    die "node $NODE not idle after ${WAIT_S} s (state: '${state:-unknown}'; log above: /var/log/slurm/slurmd.log)"
}

start_slurm() {
    install_packages
    start_munge
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$(dirname "$SLURM_CONF")"

    local want have ctld slurmd changed=0
    want=$(write_conf)
    have=$(cat "$SLURM_CONF" 2>/dev/null || true)
    ctld=$(pid_of slurmctld "$(conf_value SlurmctldPidFile "$CTLD_PID")" || true)
    slurmd=$(pid_of slurmd "$(conf_value SlurmdPidFile "$SLURMD_PID")" || true)

    if [[ $want != "$have" ]]; then
        changed=1
        if [[ -n $ctld || -n $slurmd ]]; then
            say "SLURM is running with another $SLURM_CONF: stopping it to apply this one"
            stop_slurm
            ctld="" slurmd=""
        fi
        if [[ -n $have ]]; then
            cp -p "$SLURM_CONF" "$SLURM_CONF.bak"
            say "replaced $SLURM_CONF (old one kept as $SLURM_CONF.bak)"
        else
            say "wrote $SLURM_CONF"
        fi
        printf '%s\n' "$want" >"$SLURM_CONF.tmp"
        chmod 644 "$SLURM_CONF.tmp"
        mv -f "$SLURM_CONF.tmp" "$SLURM_CONF"
    else
        say "$SLURM_CONF is up to date"
    fi

    if [[ -z $ctld ]]; then
        say "starting slurmctld"
        slurmctld || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
    else
        say "slurmctld already running (pid $ctld)"
    fi
    wait_ctld

    if [[ -z $slurmd ]]; then
        say "starting slurmd"
        slurmd || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
    else
        say "slurmd already running (pid $slurmd)"
    fi
    wait_idle
    ((changed)) && say "started one-node SLURM with a fresh config" || true
    sinfo
}

case ${1:-start} in
start) start_slurm ;;
stop)
    stop_slurm
    say "SLURM stopped (munged left running)"
    ;;
status)
    sinfo || die "sinfo failed: is SLURM started? run $0"
    ;;
-h | --help | help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (use: start, stop, status)" ;;
esac
