# The root cause of a failed attempt, from its flight records (Note [Flight
# recorder]): `jq -rs --argjson world N --arg dir DIR -f root_cause.jq
# DIR/rank-*.json`. Prints the "root cause" lines of vlm-launch's report.
#
# Who is to blame, strongest evidence first:
# - a rank with no record: dead, or stopped (a stopped process writes none);
# - a rank that did not answer another rank's survey (`did_not_answer`):
#   stopped or stuck. Open MPI wakes a stopped rank (SIGCONT, then SIGTERM)
#   when it tears the job down, and the record it then writes is as current
#   as the others', so its counts are left out of the comparison below;
# - a rank that started fewer operations on a channel than the others.
# The ranks that timed out waiting for it are victims.

([.[].rank]) as $have
| ([range(0; $world)] - $have) as $silent
| ([.[] | .rank as $asker | (.did_not_answer // [])[] | {rank: ., asker: $asker}]
    | group_by(.rank) | map({rank: .[0].rank, askers: map(.asker)})
    | map(select(.rank as $r | $silent | index($r) | not))) as $mute
| ($mute | map(.rank)) as $woke_late
| [.[] | select(.rank as $r | $woke_late | index($r) | not)
    | .rank as $r | .host as $h | .channels[] | {rank: $r, host: $h, channel, started}] as $counts
| ($counts | group_by(.channel) | map(max_by(.started) as $m | .[] | select(.started < $m.started)
    | "rank \(.rank) (\(.host)) is behind on \(.channel): started \(.started) operations, others \($m.started)")) as $behind
| "  root cause (flight records in \($dir)):",
  (if ($silent | length) > 0 then
     "    no flight record from ranks \($silent | map(tostring) | join(", ")): dead or stopped (the cause, unless a line below names another)"
   else empty end),
  ($mute[] | "    rank \(.rank) did not answer the survey of rank \(.askers | map(tostring) | join(", ")): stopped or stuck (the cause; the record it wrote later shows where it got to after it woke)"),
  ($behind[] | "    " + .),
  (if ($silent | length) == 0 and ($mute | length) == 0 and ($behind | length) == 0 then
     "    every rank wrote a record and none is behind: see the logs"
   else empty end),
  "    ranks that timed out waiting are victims: \([.[] | select(.reason | test("timed out|never arrived")) | .rank] | map(tostring) | join(", ") | if . == "" then "none" else . end)"
