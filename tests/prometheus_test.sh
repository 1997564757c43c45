#!/usr/bin/env bash
# A real Prometheus server (Debian's, on loopback, with a temporary config and
# the rules of launch/prometheus) scrapes a 2-rank run started by vlm-launch
# through the targets file it writes. Checks: the loss Prometheus stored is the
# loss the trainer logged for the same step; every recording rule, every
# metric the alerts use and every PromQL expression of the Grafana dashboard
# returns data; `promtool check metrics` finds nothing on any endpoint; HEAD
# and idle connections; the dashboard has the JSON model's required fields.
# usage: prometheus_test.sh VLM_LAUNCH VLM_TRAIN CONFIG
set -uo pipefail
launch=$1 train=$2 config=$3
source_dir=$(cd "$(dirname "$0")/.." && pwd)
rules=$source_dir/launch/prometheus dashboard=$source_dir/launch/grafana/vlmtrain.json
for tool in prometheus promtool curl jq; do
  command -v $tool > /dev/null || { echo "SKIP: $tool is not installed (scripts/install-deps.sh installs it)"; exit 0; }
done
source "$(dirname "$0")/script_lib.sh"

# The dashboard's JSON model: what Grafana needs to import it.
jq -e '(.title | type == "string") and (.uid | type == "string") and (.schemaVersion | type == "number")
  and (.panels | length > 0) and (.time.from and .time.to)
  and ([.templating.list[] | select(.type == "datasource" and .query == "prometheus")] | length == 1)
  and ([.templating.list[] | select(.name == "rank" and .includeAll and .multi)] | length == 1)
  and all(.panels[]; (.id | type == "number") and (.type | type == "string") and (.title | length > 0)
    and (.gridPos | (.h | type == "number") and (.w | type == "number") and (.x | type == "number") and (.y | type == "number"))
    and .datasource.uid == "${datasource}" and (.targets | length > 0) and all(.targets[]; .refId and (.expr | length > 0)))
  and ([.panels[].id] | length == (unique | length))' "$dashboard" > /dev/null ||
  fail "$dashboard lacks a field of Grafana's dashboard model"
pass "the dashboard has the required fields, a datasource variable and a rank selector"

port=19090
while (exec 3<> /dev/tcp/127.0.0.1/$port) 2> /dev/null; do port=$((port + 1)); done
run=$root/run
mkdir -p "$run"
cat > "$root/prometheus.yml" << EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$rules/recording_rules.yml", "$rules/alerts.yml"]
scrape_configs:
  - job_name: vlmtrain
    scrape_timeout: 1s
    honor_labels: true  # as launch/prometheus/prometheus.yml
    file_sd_configs: [{files: ["$run/targets.json"], refresh_interval: 1s}]
EOF
promtool check config "$root/prometheus.yml" > "$root/check.out" 2>&1 || fail "promtool check config: $(cat "$root/check.out")"
prometheus --config.file="$root/prometheus.yml" --storage.tsdb.path="$root/tsdb" \
  --web.listen-address=127.0.0.1:$port > "$root/prometheus.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$port
for _ in $(seq 1200); do
  curl -sf "$api/-/ready" > /dev/null && break
  sleep 0.1  # polls until the server is ready (bounded above)
done
curl -sf "$api/-/ready" > /dev/null || fail "Prometheus did not start: $(tail "$root/prometheus.log")"

"$launch" --nproc-per-node 2 --run-dir "$run" -- "$train" --config "$config" --set loop.steps=1000000 \
  --set loop.log_every=1 --set metrics.enabled=true --set metrics.port_base=0 \
  --set metrics.peak_flops_per_second=1e11 --set checkpoint.dir="$root/ckpt" --set checkpoint.every_steps=50 \
  --set eval.enabled=true --set eval.every_steps=20 --set eval.samples=200 --set eval.caption_samples=0 \
  > "$root/launch.out" 2>&1 &
job=$!
pids+=($job)

query() {  # PROMQL: the result array of an instant query
  curl -sf --get "$api/api/v1/query" --data-urlencode "query=$1" | jq -c '.data.result'
}
wait_for_data() {  # PROMQL WHAT: until the query returns at least one series (at most 120 s)
  local result
  for _ in $(seq 600); do
    result=$(query "$1")
    [[ -n $result && $result != "[]" ]] && return 0
    kill -0 "$job" 2> /dev/null || fail "the job ended: $(tail "$root/launch.out")"
    sleep 0.2  # polls until Prometheus has the data (bounded above)
  done
  fail "no data for $2: $1"
}

wait_for_data 'count(up{job="vlmtrain"} == 1) == 2' "both ranks scraped through $run/targets.json"
wait_for_data 'rank:vlm_busy_seconds:rate5m' "5-minute rates (two scrapes)"
wait_for_data 'vlm_checkpoint_timestamp_seconds > 0' "a checkpoint"
series=$(query 'vlm_train_step{rank="0"}')
[[ $(jq -r '.[0].metric.job' <<< "$series") == vlmtrain && $(jq -r '.[0].metric.run' <<< "$series") == run &&
  $(jq -r '.[0].metric.exported_job' <<< "$series") == null ]] ||
  fail "labels should be the scrape job's job and the targets' run, no exported_job: $series"
exported=$(query '{job="vlmtrain"}' | jq -c '[.[].metric | keys[] | select(startswith("exported_"))] | unique')
[[ $exported == "[]" ]] || fail "labels clash between the series and the targets (Prometheus renamed them): $exported"
[[ $(query 'vlm_run_info{run="run"}' | jq length) == 2 ]] ||
  fail "vlm_run_info should carry the launcher's run name: $(query vlm_run_info)"
pass "Prometheus scrapes both ranks through the launcher's file_sd targets (job, run and rank labels; no exported_ label)"

# The loss Prometheus stored for a step is the one the trainer logged for it.
matched_steps() {  # how many scraped (step, loss) pairs of rank 0 match metrics.jsonl; fails on a mismatch
  local range pairs step loss logged checked=0
  range=$(curl -sf --get "$api/api/v1/query" --data-urlencode 'query={__name__=~"vlm_train_step|vlm_train_loss",rank="0",kind=~"total|"}[60s]')
  pairs=$(jq -c '[.data.result[] | {name: .metric.__name__, values: .values}]
    | (map(select(.name == "vlm_train_step"))[0].values | map({key: (.[0] | tostring), value: (.[1] | tonumber)}) | from_entries) as $step
    | [map(select(.name == "vlm_train_loss"))[0].values[] | select($step[.[0] | tostring]) | {step: $step[.[0] | tostring], loss: (.[1] | tonumber)}]' <<< "$range")
  while read -r step loss; do
    logged=$(jq -r --argjson s "$step" 'select(.step == $s) | .loss' "$run/metrics.jsonl" | tail -1)
    [[ -n $logged ]] || continue
    awk -v a="$loss" -v b="$logged" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-6 * (b < 0 ? -b : b)) }' ||
      fail "step $step: Prometheus has loss $loss, the trainer logged $logged"
    checked=$((checked + 1))
  done < <(jq -r '.[] | "\(.step) \(.loss)"' <<< "$pairs")
  echo "$checked"
}
for _ in $(seq 300); do
  checked=$(matched_steps) || exit 1
  ((checked >= 5)) && break
  sleep 0.2  # polls until enough scrapes are stored (bounded above)
done
((checked >= 5)) || fail "only $checked scraped steps could be matched with metrics.jsonl"
pass "the loss over the HTTP API equals the logged loss at $checked scraped steps"

for address in $(jq -r '.[].targets[0]' "$run/targets.json"); do
  curl -sf "http://$address/metrics" > "$root/scrape.txt" || fail "cannot scrape $address"
  lint=$(promtool check metrics < "$root/scrape.txt" 2>&1) || fail "promtool check metrics on $address: $lint"
  [[ -z $lint ]] || fail "promtool check metrics on $address: $lint"
  [[ $(curl -s -o /dev/null -w '%{http_code}' -I "http://$address/metrics") == 200 ]] || fail "HEAD /metrics on $address"
  idle=()
  for _ in 1 2 3 4 5 6 7 8; do
    exec {fd}<> "/dev/tcp/${address%:*}/${address##*:}" && idle+=("$fd")
  done
  curl -sf --max-time 5 "http://$address/metrics" > /dev/null || fail "a scrape beside 8 idle connections failed on $address"
  for fd in "${idle[@]}"; do exec {fd}>&-; done
done
pass "promtool check metrics finds nothing on either endpoint; HEAD works; 8 idle connections do not block a scrape"

for record in $(grep -oE 'record: [a-z_:0-9]+' "$rules/recording_rules.yml" | cut -d' ' -f2); do
  wait_for_data "$record" "recording rule $record"
done
for metric in $(grep -E '^\s+(expr:|[a-z(])' "$rules/alerts.yml" | grep -oE '\b(vlm_[a-z_]+|up|process_[a-z_]+|run:[a-z_:0-9]+|rank:[a-z_:0-9]+)\b' | sort -u); do
  wait_for_data "$metric" "$metric, used by an alert"
done
pass "every recording rule and every series the alerts use has data"

panels=0
while IFS=$'\t' read -r title expr; do
  expr=${expr//'$__rate_interval'/1m}
  expr=${expr//'$__range'/5m}
  expr=${expr//'$run'/.*}
  expr=${expr//'$rank'/.*}
  wait_for_data "$expr" "dashboard panel '$title'"
  panels=$((panels + 1))
done < <(jq -r '.panels[] | .title as $t | .targets[] | [$t, .expr] | @tsv' "$dashboard")
for variable in $(jq -r '.templating.list[] | select(.type == "query") | .definition' "$dashboard" | sed -E 's/label_values\((.*), *[a-z_]+\)$/\1/'); do
  wait_for_data "${variable//'$run'/.*}" "dashboard variable over $variable"
done
pass "all $panels PromQL expressions of the dashboard's panels and its variables return data"

kill -TERM "$job"
for _ in $(seq 1200); do
  kill -0 "$job" 2> /dev/null || break
  sleep 0.1  # polls until the job ends (bounded above)
done
wait "$job"
rc=$?
((rc == 75)) || fail "the job should stop with 75 after SIGTERM, got $rc: $(tail "$root/launch.out")"
[[ $(jq length "$run/targets.json") == 0 ]] || fail "a finished job should leave no scrape targets: $(cat "$run/targets.json")"
pass "after the job, targets.json is empty (no VlmRankDown for a finished run)"
echo "prometheus tests: $passed passed, 0 failed"
