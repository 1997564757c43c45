#!/usr/bin/env bash
# The job scripts of launch/slurm on a real Slurm: the test starts munged,
# slurmctld and slurmd on this machine (temporary key, config, state and
# ports), submits with sbatch and checks, each wait bounded:
#  - direct launch (srun --mpi=pmix) completes and leaves a verified checkpoint;
#  - `scancel --signal=USR1 --batch` (through the script's trap) makes it save
#    and end 0; `scontrol requeue` then resumes from that checkpoint and ends at
#    the configured step with the same final loss as the uninterrupted run;
#  - vlm-launch (mpirun inside the allocation) with `scancel --signal=USR1
#    --full` saves and ends 0.
# usage: slurm_test.sh REPO_ROOT VLM_CKPT CONFIG
set -uo pipefail
repo=$1 ckpt=$2 config=$3
for tool in munged slurmctld slurmd sbatch scontrol squeue; do
  command -v $tool > /dev/null || { echo "SKIP: $tool is not installed (scripts/install-deps.sh installs slurm-wlm and munge)"; exit 0; }
done
[[ $(id -u) == 0 ]] || { echo "SKIP: slurmd must run as root to start jobs"; exit 0; }
root=$(mktemp -d)
fail() { echo "FAIL: $*"; for f in "$root"/log/*.log; do echo "--- $f"; tail -5 "$f"; done; exit 1; }
passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
export SLURM_CONF=$root/slurm.conf
cleanup() {
  for daemon in slurmd slurmctld munged; do
    [[ -f $root/$daemon.pid ]] && kill "$(cat "$root/$daemon.pid")" 2> /dev/null
  done
  pkill -9 -f "$root/" 2> /dev/null
  rm -rf "$root"
}
trap cleanup EXIT

free_port() {
  local port=$1
  while (exec 3<> /dev/tcp/127.0.0.1/$port) 2> /dev/null; do port=$((port + 1)); done
  echo $port
}
ctld_port=$(free_port 16817)
slurmd_port=$(free_port $((ctld_port + 1)))
node=$(hostname -s)
mkdir -p "$root"/{state,spool,log,jobs}
head -c 1024 /dev/urandom > "$root/munge.key"
chmod 600 "$root/munge.key"
cat > "$SLURM_CONF" << EOF
ClusterName=vlmtest
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$root/munge.sock,cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$root/state
SlurmdSpoolDir=$root/spool
SlurmctldPidFile=$root/slurmctld.pid
SlurmdPidFile=$root/slurmd.pid
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=60
NodeName=$node CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
munged --force -S "$root/munge.sock" --key-file="$root/munge.key" --log-file="$root/log/munged.log" \
  --pid-file="$root/munged.pid" --seed-file="$root/munged.seed" || { echo "SKIP: munged cannot start here"; exit 0; }
slurmctld -f "$SLURM_CONF" || { echo "SKIP: slurmctld cannot start here: $(tail -3 "$root/log/slurmctld.log")"; exit 0; }
slurmd -f "$SLURM_CONF" || { echo "SKIP: slurmd cannot start here: $(tail -3 "$root/log/slurmd.log")"; exit 0; }
for _ in $(seq 600); do
  [[ $(sinfo -h -o %T 2> /dev/null) == idle ]] && break
  sleep 0.2  # polls until the node is up (bounded above)
done
[[ $(sinfo -h -o %T) == idle ]] || { echo "SKIP: the Slurm node did not come up: $(sinfo 2>&1)"; exit 0; }
echo "slurm: slurmctld on port $ctld_port, slurmd on $slurmd_port, node $node idle"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 VLM_ROOT=$repo
steps=120
job_state() { scontrol show job "$1" 2> /dev/null | sed -nE 's/.*JobState=([A-Z_]+).*/\1/p'; }
job_exit() { scontrol show job "$1" | sed -nE 's/.* ExitCode=([0-9:]+).*/\1/p'; }
submit() {  # SCRIPT NAME [sbatch options]: prints the job id
  local script=$1 name=$2
  shift 2
  sbatch --parsable --chdir="$root/jobs" --nodes=1 --ntasks-per-node=2 --output="$root/jobs/$name.out" "$@" \
    "$repo/launch/slurm/$script" "$config" --set loop.steps=$steps --set checkpoint.dir="$root/$name.ckpt"
}
wait_state() {  # JOB STATE...: until the job is in one of them (at most 180 s)
  local job=$1 state
  shift
  for _ in $(seq 900); do
    state=$(job_state "$job")
    for want in "$@"; do [[ $state == "$want" ]] && return 0; done
    sleep 0.2  # polls until the job reaches the state (bounded above)
  done
  # What the job was doing, for the next reader: its output, its launcher's log, its processes.
  for f in "$root"/jobs/*.out "$root/jobs/runs/$job/launch.log"; do
    [[ -f $f ]] && { echo "--- tail of $f"; tail -n 25 "$f"; }
  done
  echo "--- processes"
  ps -eo pid,ppid,stat,etime,args --forest | grep -E "vlm|mpirun|orted|slurmstepd|sleep|tee" | grep -v grep
  fail "job $job is $state, not $* after 180 s"
}
wait_for() {  # FILE PATTERN (at most 180 s)
  for _ in $(seq 900); do
    grep -qE -- "$2" "$1" 2> /dev/null && return 0
    sleep 0.2  # polls until the line appears (bounded above)
  done
  fail "waited 180 s for /$2/ in $1"
}
expect_completed() {  # JOB NAME WHAT: the job ended COMPLETED with exit code 0:0
  [[ $(job_state "$1") == COMPLETED && $(job_exit "$1") == 0:0 ]] ||
    fail "job $1 $3: $(job_state "$1") $(job_exit "$1"): $(tail -20 "$root/jobs/$2.out")"
}
final_loss() { grep -oE "step $steps/$steps loss [0-9.]+ \(contrastive [0-9.]+ caption [0-9.]+\) grad_norm [0-9.]+" "$1" | tail -1; }

# 1. Direct launch, uninterrupted: the reference.
job=$(submit train-srun.sbatch whole) || fail "sbatch refused the job"
wait_state "$job" COMPLETED FAILED CANCELLED
expect_completed "$job" whole "uninterrupted"
reference=$(final_loss "$root/jobs/whole.out")
[[ -n $reference ]] || fail "no final step in $(tail "$root/jobs/whole.out")"
"$ckpt" verify "$root/whole.ckpt/latest" > /dev/null || fail "the checkpoint does not verify"
pass "sbatch with srun --mpi=pmix: COMPLETED 0:0, a verified checkpoint ($reference)"

# 2. USR1 to the batch shell only (what --signal=B:USR1@120 sends): saved, ended 0; then requeued.
# The job holds after step 20 until its signal arrives: a whole run takes ~1 s,
# less than scancel may (munge). The requeued run, resuming at step 20, does not hold.
job=$(VLM_FAULT=hold:20 submit train-srun.sbatch stopped) || fail "sbatch refused the job"
wait_for "$root/jobs/stopped.out" "step 20/$steps"
scancel --signal=USR1 --batch "$job"
wait_state "$job" COMPLETED FAILED CANCELLED
expect_completed "$job" stopped "after USR1"
grep -q "stopped by a signal after step" "$root/jobs/stopped.out" || fail "no save on USR1: $(tail "$root/jobs/stopped.out")"
"$ckpt" verify "$root/stopped.ckpt/latest" > /dev/null || fail "the checkpoint saved on USR1 does not verify"
saved=$(sed -nE 's/.*stopped by a signal after step ([0-9]+).*/\1/p' "$root/jobs/stopped.out" | tail -1)
((saved == 20)) || fail "held after step 20, the job saved at step $saved"
pass "scancel --signal=USR1 --batch: the trap forwards it, the job saves at step $saved and ends COMPLETED 0:0"

scontrol requeue "$job" || fail "scontrol requeue $job refused"
wait_for "$root/jobs/stopped.out" "SLURM_RESTART_COUNT=1"
wait_state "$job" COMPLETED FAILED CANCELLED
[[ $(job_state "$job") == COMPLETED ]] || fail "the requeued job: $(job_state "$job"): $(tail "$root/jobs/stopped.out")"
grep -q "resumed from $root/stopped.ckpt/step-$(printf %08d "$saved") at step $saved" "$root/jobs/stopped.out" ||
  fail "the requeued job did not resume from step $saved"
resumed=$(final_loss "$root/jobs/stopped.out")
[[ $resumed == "$reference" ]] || fail "the requeued run ended with '$resumed', the uninterrupted one with '$reference'"
pass "scontrol requeue: SLURM_RESTART_COUNT=1, resumed from step $saved, the same final loss as the uninterrupted run"

# 3. vlm-launch inside the allocation (mpirun), USR1 to every process of the job.
job=$(VLM_FAULT=hold:20 submit train-launch.sbatch launched) || fail "sbatch refused the job"
wait_for "$root/jobs/launched.out" "\[rank 0\] step 20/$steps"
scancel --signal=USR1 --full "$job"
wait_state "$job" COMPLETED FAILED CANCELLED
expect_completed "$job" launched "after USR1 --full"
grep -q "stopped by SIGUSR1 .* checkpoint saved" "$root/jobs/launched.out" || fail "vlm-launch did not report the save"
"$ckpt" verify "$root/launched.ckpt/latest" > /dev/null || fail "the checkpoint saved on USR1 --full does not verify"
[[ -f $root/jobs/runs/$job/attempt-0/rank-1.log ]] || fail "no per-rank log in the run dir"
pass "vlm-launch in the allocation (mpirun), scancel --signal=USR1 --full: saved, COMPLETED 0:0"

echo "slurm tests: $passed passed, 0 failed"
