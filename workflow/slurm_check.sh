#!/usr/bin/env bash
# make slurm-check: build the `smoke` book through a REAL single-node SLURM on this machine.
#
# Starts munge + slurmctld + slurmd (Debian packages slurm-wlm and munge; installed with apt-get
# when missing and running as root) with a slurm.conf for this host only (CPU node, no GPU, no
# accounting daemon), runs
#     crapnet book --profile smoke --executor slurm --partition check --gpus-per-job 0 \
#                  --cluster-profile workflow/profiles/slurm-check
# so that every job of the workflow (superpixels, trainings, evaluations, notebook executions)
# is submitted with sbatch, checks that each of them ran inside a SLURM job, and stops the
# daemons again (also on failure). Everything it writes lives under $SLURM_CHECK_DIR
# (default: a new folder under /tmp), except, while it runs and only when the machine has no
# SLURM configuration of its own, a link /etc/slurm/slurm.conf to the check's slurm.conf (the
# srun that Snakemake's job step runs inside each job reads the default location); the link
# is removed again on exit.
#
#   CRAPNET=.venv/bin/crapnet workflow/slurm_check.sh      (the Makefile passes CRAPNET)
set -euo pipefail
cd "$(dirname "$0")/.."
CRAPNET=${CRAPNET:-crapnet}
WORK=${SLURM_CHECK_DIR:-$(mktemp -d /tmp/crapnet-slurm-check.XXXXXX)}
mkdir -p "$WORK"/{state,spool,log,run}
say() { echo "slurm-check: $*"; }

# ---- the packages
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "slurm-check: error: ${need[*]} missing; install them (Debian: apt-get install slurm-wlm munge) or run as root" >&2
    exit 2
  fi
fi
[ "$(id -u)" = 0 ] || { echo "slurm-check: error: starting slurmd needs root" >&2; exit 2; }

# ---- configuration for this host
HOST=$(hostname -s)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
export SLURM_CONF="$WORK/slurm.conf"   # sbatch/squeue/scancel of this shell and of Snakemake read it
cat > "$SLURM_CONF" <<EOF
# single-node SLURM of crapnet's slurm check (workflow/slurm_check.sh)
ClusterName=crapnet-check
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldPort=${SLURM_CHECK_PORT:-16817}
SlurmdPort=$(( ${SLURM_CHECK_PORT:-16817} + 1 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
$(slurmd -C | head -1 | sed "s/RealMemory=[0-9]*/RealMemory=$MEM_MB/") State=UNKNOWN
PartitionName=check Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# ---- start munge, slurmctld, slurmd; stop them on exit
LINKED=
cleanup() {
  set +e
  [ -n "$LINKED" ] && rm -f /etc/slurm/slurm.conf
  for pidfile in "$WORK/run/slurmd.pid" "$WORK/run/slurmctld.pid" "$WORK/run/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  sleep 1
  say "daemons stopped; logs in $WORK/log"
}
trap cleanup EXIT
if [ ! -f /etc/munge/munge.key ]; then
  mkdir -p /etc/munge && dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chmod 400 /etc/munge/munge.key
fi
# munge clients (slurm) find the daemon at the default socket: start one there when none answers
if ! munge -n </dev/null >/dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  munged --force --pid-file="$WORK/run/munged.pid" --log-file="$WORK/log/munged.log"
fi
munge -n </dev/null | unmunge >/dev/null
if [ ! -e /etc/slurm/slurm.conf ]; then
  mkdir -p /etc/slurm && ln -s "$SLURM_CONF" /etc/slurm/slurm.conf && LINKED=1
elif [ "$(readlink -f /etc/slurm/slurm.conf)" != "$(readlink -f "$SLURM_CONF")" ]; then
  say "note: /etc/slurm/slurm.conf exists (not ours): srun inside the jobs will read it"
fi
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || { echo "slurm-check: error: node $HOST is '${state:-unknown}', not idle; see $WORK/log" >&2; exit 1; }
say "SLURM up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')"
scontrol show config | grep -E '^(SLURM_VERSION|ClusterName|SelectType) ' | sed 's/^/slurm-check:   /'

# ---- the smoke book through SLURM
OUT="$WORK/book"
t0=$(date +%s)
"$CRAPNET" book --profile smoke --executor slurm --partition check --gpus-per-job 0 \
  --cluster-profile workflow/profiles/slurm-check --out "$OUT" --runs "$WORK/runs" --results "$WORK/no-results"
t1=$(date +%s)

# ---- every job ran inside a SLURM job
logs=$(find "$OUT/logs" -name '*.log' -newer "$SLURM_CONF" ! -name 'snakemake*' ! -name 'sphinx.log' ! -name 'html.log')
total=0; in_slurm=0
for f in $logs; do
  total=$((total + 1))
  grep -q 'SLURM job [0-9]' "$f" && in_slurm=$((in_slurm + 1))
done
ids=$(grep -ho 'SLURM job [0-9]*' $logs | sort -u | wc -l)
say "$in_slurm of $total job logs were written inside a SLURM job ($ids distinct SLURM job ids); book in $((t1 - t0)) s"
[ "$total" -gt 0 ] && [ "$in_slurm" = "$total" ] || { echo "slurm-check: error: some jobs did not run under SLURM" >&2; exit 1; }
[ -f "$OUT/html/index.html" ] || { echo "slurm-check: error: no $OUT/html/index.html" >&2; exit 1; }
say "OK: smoke book built through SLURM: $OUT/html/index.html"
