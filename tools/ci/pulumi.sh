#!/usr/bin/env bash
# One Pulumi operation on one region stack, in a GitHub Actions job of .github/workflows/.
#
#   OPERATION  preview | up | recover (tools/recover_stack.py --cancel: release the lock of an
#              interrupted update, settle its pending creates; docs/operations.md)
#   STACK      the stack (a Pulumi.<stack>.yaml), selected as $PULUMI_ORG/meshstack/$STACK
#   PULUMI_ORG the Pulumi Cloud organization (vars.PULUMI_ORG)
#   CREDENTIALS  the Pulumi ESC environment $PULUMI_ORG/meshstack/$CREDENTIALS whose
#              `files.KUBECONFIG` is this job's cluster credential (docs/policy.md):
#              `preview` (a dry-run-only identity) or `deploy-<stack>`
#   STOP_AFTER_MINUTES  the command gets SIGINT after this long (the job's timeout minus 8),
#              so the Pulumi CLI cancels itself gracefully (in-flight operations finish, the
#              state is written, the lock released) before the runner kills the job; SIGKILL
#              5 minutes later if it is still running
#   PULUMI_ACCESS_TOKEN  exported by the pulumi/auth-actions step before this one: the
#              short-lived token of this job's Pulumi team, which is what may open $CREDENTIALS
#
# The kubeconfig reaches the program only through `pulumi env run` (KUBECONFIG points at a
# temporary file while the command runs); the stack files name the context
# (meshstack:kubeContext). The output, secrets masked by Pulumi, goes to the job summary and to
# $RUNNER_TEMP/pulumi-$OPERATION-$STACK.md (the pull-request workflow uploads it for its
# comment job).
set -euo pipefail

: "${OPERATION:?OPERATION is preview or up}"
: "${STACK:?STACK names the region stack}"
: "${PULUMI_ORG:?vars.PULUMI_ORG is not set (docs/policy.md, repository settings)}"
: "${CREDENTIALS:?CREDENTIALS names the ESC environment with the cluster credential}"
: "${STOP_AFTER_MINUTES:?STOP_AFTER_MINUTES is the job timeout minus 8}"
if [ -z "${PULUMI_ACCESS_TOKEN:-}" ]; then
  echo "::error::no Pulumi token: the pulumi/auth-actions step must run first in this job" >&2
  exit 1
fi

common=(
  --stack "$PULUMI_ORG/meshstack/$STACK"
  --non-interactive
  --diff
  --policy-pack policy
  --policy-pack-config policy/config.json
)
case "$OPERATION" in
  preview) command=(pulumi preview "${common[@]}") ;;
  up) command=(pulumi up --yes "${common[@]}") ;;
  recover)
    command=(.venv/bin/python -m tools.recover_stack --stack "$PULUMI_ORG/meshstack/$STACK" --cancel)
    ;;
  *)
    echo "::error::OPERATION must be preview, up or recover, not ${OPERATION}" >&2
    exit 1
    ;;
esac

log="${RUNNER_TEMP:-/tmp}/pulumi-$OPERATION-$STACK.log"
status=0
# SIGINT goes to the command itself (not to `pulumi env run`): `timeout` signals its child.
pulumi env run "$PULUMI_ORG/meshstack/$CREDENTIALS" -- \
  timeout --signal=INT --kill-after=5m "${STOP_AFTER_MINUTES}m" "${command[@]}" 2>&1 \
  | tee "$log" || status=$?
if [ "$status" -eq 124 ]; then
  echo "::error::pulumi $OPERATION stopped after ${STOP_AFTER_MINUTES} minutes (SIGINT); if the stack is still locked: docs/operations.md, Interrupted deploy" >&2
fi

report="${RUNNER_TEMP:-/tmp}/pulumi-$OPERATION-$STACK.md"
{
  echo "### pulumi $OPERATION $STACK (exit $status)"
  echo
  echo "Commit \`$(git rev-parse HEAD)\`; output of this commit's program and policy pack."
  echo
  echo '```'
  # A comment or summary holds at most 65536 characters; the end has the summary line.
  tail -c 60000 "$log"
  echo '```'
} >"$report"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$report" >>"$GITHUB_STEP_SUMMARY"
fi
exit "$status"
