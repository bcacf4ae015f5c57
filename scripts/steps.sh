# shellcheck shell=bash
# Sourced by scripts/test: `timed LABEL COMMAND...` runs one step of the suite,
# and on exit the steps' report is printed (held by tests/harness_reports.rs).
#
# Every step's wall time, printed as it ends and once more, all together, when
# the script exits (passed or not): what a slow CI run is read from.
# A failed step's own failure lines (a failed check, test, build or apt error) are
# printed again at the very end too: a CI log shows its last lines, and a long
# step's failures are far above them.
suite_started=$(date +%s)
timings=() failed_logs=()
step_logs=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-steps.XXXXXX")
timed() { # timed LABEL COMMAND...: run COMMAND (output kept too), record how long it took
  local label=$1 t rc=0 log; shift
  log=$step_logs/${#timings[@]}.log
  echo "scripts/test: $label" >&2
  t=$(date +%s)
  "$@" 2>&1 | tee "$log" || rc=$?
  timings+=("$(printf '%6d s  %s%s' "$(( $(date +%s) - t ))" "$label" "$([ "$rc" -eq 0 ] || echo " (exit $rc)")")")
  [ "$rc" -eq 0 ] || failed_logs+=("$label:$log")
  return "$rc"
}
print_timings() {
  local rc=$? line entry
  for entry in "${failed_logs[@]-}"; do
    [ -n "$entry" ] || continue
    echo "scripts/test: what failed in ${entry%:*} (its failure lines, at most 20):" >&2
    grep -a -E ': FAIL |FAILED|^ +FAIL \[|panicked at|^error(\[E[0-9]+\])?:|^E: |setup failed' "${entry##*:}" |
      tr -d '\r' | cut -c1-300 | tail -n 20 >&2 || true
  done
  echo "scripts/test: wall time per step (exit $rc):" >&2
  for line in "${timings[@]-}"; do [ -z "$line" ] || echo "  $line" >&2; done
  echo "scripts/test: total $(( $(date +%s) - suite_started )) s" >&2
  rm -rf "$step_logs"
}
