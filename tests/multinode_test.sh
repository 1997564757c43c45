#!/usr/bin/env bash
# A 2-node job on one machine: two network namespaces, each with its own host
# name (a UTS namespace), address and /etc/hosts, joined by a veth pair; an
# sshd on node b; vlm-launch on node a starts the job from a hostfile, and
# Open MPI starts its daemon on node b over ssh. Checks: the job finishes with
# one rank per host, the targets name both hosts, and a rank killed on node b
# is reported with that host before the restart finishes the job.
# usage: multinode_test.sh VLM_LAUNCH VLM_TRAIN VLM_CKPT CONFIG
set -uo pipefail
launch=$1 train=$2 ckpt=$3 config=$4
[[ $(id -u) == 0 ]] || { echo "SKIP: network namespaces and sshd need root"; exit 0; }
for tool in ip unshare sshd ssh ssh-keygen jq; do
  command -v $tool > /dev/null || { echo "SKIP: $tool is not installed (scripts/install-deps.sh installs it)"; exit 0; }
done
root=$(mktemp -d)
tag=vlm$$
ns_a=${tag}a ns_b=${tag}b
cleanup() {
  [[ -f $root/sshd.pid ]] && kill "$(cat "$root/sshd.pid")" 2> /dev/null
  for ns in "$ns_a" "$ns_b"; do
    ip netns pids "$ns" 2> /dev/null | xargs -r kill -9 2> /dev/null
    ip netns del "$ns" 2> /dev/null
    rm -rf "/etc/netns/$ns"
  done
  pkill -9 -f "$root/" 2> /dev/null
  rm -rf "$root"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }

ip netns add "$ns_a" 2> "$root/netns.err" || { echo "SKIP: cannot create a network namespace: $(cat "$root/netns.err")"; exit 0; }
ip netns add "$ns_b" || fail "cannot create a second network namespace"
ip link add "${tag}x" type veth peer name "${tag}y" || fail "cannot create a veth pair"
ip link set "${tag}x" netns "$ns_a"
ip link set "${tag}y" netns "$ns_b"
ip -n "$ns_a" addr add 10.213.0.1/24 dev "${tag}x"
ip -n "$ns_b" addr add 10.213.0.2/24 dev "${tag}y"
for ns in "$ns_a" "$ns_b"; do
  ip -n "$ns" link set lo up
  mkdir -p "/etc/netns/$ns"  # `ip netns exec` mounts these over /etc
  printf '127.0.0.1 localhost\n10.213.0.1 nodea\n10.213.0.2 nodeb\n' > "/etc/netns/$ns/hosts"
done
ip -n "$ns_a" link set "${tag}x" up
ip -n "$ns_b" link set "${tag}y" up

ssh-keygen -q -t ed25519 -N '' -f "$root/id" && ssh-keygen -q -t ed25519 -N '' -f "$root/host_key" || fail "ssh-keygen"
cat > "$root/sshd_config" << EOF
ListenAddress 10.213.0.2
HostKey $root/host_key
AuthorizedKeysFile $root/id.pub
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $root/sshd.pid
EOF
cat > "$root/ssh_config" << EOF
Host *
  IdentityFile $root/id
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
EOF
mkdir -p /run/sshd
ip netns exec "$ns_b" unshare --uts sh -c "hostname nodeb && exec /usr/sbin/sshd -f '$root/sshd_config' -E '$root/sshd.log'" ||
  fail "sshd did not start: $(cat "$root/sshd.log")"
on_a() { ip netns exec "$ns_a" unshare --uts sh -c 'hostname nodea && exec "$@"' sh "$@"; }
for _ in $(seq 300); do
  [[ $(on_a ssh -F "$root/ssh_config" nodeb hostname 2> /dev/null) == nodeb ]] && break
  sleep 0.1  # polls until sshd answers (bounded above)
done
[[ $(on_a ssh -F "$root/ssh_config" nodeb hostname 2>&1) == nodeb ]] || fail "cannot ssh to nodeb: $(cat "$root/sshd.log")"
echo "multinode: nodea 10.213.0.1 and nodeb 10.213.0.2 (namespaces $ns_a, $ns_b); ssh nodea -> nodeb works"

printf 'nodea slots=1\nnodeb slots=1\n' > "$root/hosts"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_plm_rsh_agent="ssh -F $root/ssh_config"
export OMPI_MCA_btl_tcp_if_include=10.213.0.0/24 OMPI_MCA_oob_tcp_if_include=10.213.0.0/24
tiny=(--config "$config" --set metrics.enabled=true --set metrics.port_base=0 --set loop.log_every=10)

# 1. One rank per node from a hostfile.
on_a "$launch" --hostfile "$root/hosts" --nproc-per-node 1 --run-dir "$root/run" -- "$train" "${tiny[@]}" \
  --set checkpoint.dir="$root/ckpt" > "$root/run.out" 2>&1 || fail "the 2-node job failed: $(tail -30 "$root/run.out")"
grep -q "^vlm-rank: rank 0 on nodea" "$root/run/attempt-0/rank-0.log" || fail "rank 0 did not run on nodea"
grep -q "^vlm-rank: rank 1 on nodeb" "$root/run/attempt-0/rank-1.log" || fail "rank 1 did not run on nodeb"
grep -q "rank 1/2 (stage 0/1, dp_rank 1/2, local 0/1)" "$root/run/attempt-0/rank-1.log" ||
  fail "rank 1 should be alone on its host: $(grep 'rank 1/2' "$root/run/attempt-0/rank-1.log")"
# The targets the launcher wrote while the job ran (a finished job's file is empty).
grep -qE "scrape targets: rank 0 nodea:[0-9]+, rank 1 nodeb:[0-9]+$" "$root/run/launch.log" ||
  fail "the targets should name both hosts: $(grep 'scrape targets' "$root/run/launch.log")"
"$ckpt" verify "$root/ckpt/latest" > /dev/null || fail "the 2-node checkpoint does not verify"
pass "a 2-node job from a hostfile (mpirun's daemon over ssh): rank 0 on nodea, rank 1 on nodeb, targets for both"

# 2. Rank 1 killed on nodeb: reported with its host, restarted, finished.
on_a "$launch" --hostfile "$root/hosts" --nproc-per-node 1 --max-restarts 1 --restart-backoff 1 --run-dir "$root/run2" -- \
  "$train" "${tiny[@]}" --set loop.steps=150 --set checkpoint.dir="$root/ckpt2" --set checkpoint.every_steps=10 \
  > "$root/run2.out" 2>&1 &
job=$!
for _ in $(seq 1200); do
  [[ -f $root/ckpt2/latest ]] && grep -q "^vlm-rank: rank 1" "$root/run2/attempt-0/rank-1.log" 2> /dev/null && break
  sleep 0.1  # polls until a checkpoint exists (bounded above)
done
victim=$(sed -nE '1s/.* pid ([0-9]+) .*/\1/p' "$root/run2/attempt-0/rank-1.log")
[[ -n $victim ]] && kill -9 "$victim" || fail "rank 1 was not running"
for _ in $(seq 1800); do
  kill -0 "$job" 2> /dev/null || break
  sleep 0.1  # polls until the job ends (bounded above)
done
kill -0 "$job" 2> /dev/null && fail "the restarted 2-node job did not end in 180 s"
wait "$job" || fail "the restarted 2-node job failed: $(tail -30 "$root/run2.out")"
grep -q "first to fail: rank 1 on nodeb: killed by signal 9" "$root/run2/attempt-0/failure.txt" ||
  fail "the report should name rank 1 on nodeb: $(cat "$root/run2/attempt-0/failure.txt")"
grep -q "step 150/150" "$root/run2/attempt-1/rank-0.log" || fail "the restart did not finish"
pass "rank 1 killed on nodeb: reported as 'rank 1 on nodeb: killed by signal 9', restarted across both nodes, finished"

echo "multinode tests: $passed passed, 0 failed"
