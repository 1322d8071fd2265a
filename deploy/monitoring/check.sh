#!/usr/bin/env bash
# Checks Ferry's monitoring component; exits non-zero on the first problem.
#   bash deploy/monitoring/check.sh          check
#   bash deploy/monitoring/check.sh --write  first copy the groups of rules/ferry.rules.yaml
#                                            into rules.yaml (the PrometheusRule), then check
# Checks: rules.yaml's spec.groups equal the rule file's groups; every query of the rules and
# of dashboards/ferry.json names only metrics Ferry exports (or `up`); the dashboard is valid
# JSON and its queries parse; promtool check rules and promtool test rules pass; and, when
# kubectl is at hand, deploy/overlays/monitoring renders both unchanged.
# Needs python3 with PyYAML (apt-get install python3-yaml, or pip install pyyaml) and promtool.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
write=no
case "${1:-}" in
  "") ;;
  --write) write=yes ;;
  *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac
for tool in python3 promtool; do
  command -v "$tool" >/dev/null || { echo "check.sh: $tool is missing" >&2; exit 1; }
done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

WRITE="$write" SCRATCH="$scratch" python3 - <<'PY'
import json, os, re, sys
import yaml

RULE_FILE = "rules/ferry.rules.yaml"
RULE_OBJECT = "rules.yaml"
DASHBOARD = "dashboards/ferry.json"

# What Ferry exports (coordinator and node agent), and Prometheus's own `up`.
ALLOWED = {
    "up", "ferry_ready",
    "ferry_backup_total", "ferry_restore_total",
    "ferry_backup_duration_seconds_bucket", "ferry_backup_duration_seconds_sum",
    "ferry_backup_duration_seconds_count",
    "ferry_backup_last_successful_timestamp_seconds", "ferry_schedule_period_seconds",
    "ferry_backup_storage_location_available", "ferry_repository_maintenance_total",
    "ferry_hook_total", "ferry_storage_retries_total",
    "ferry_pod_volume_operations_total",
    "ferry_pod_volume_operation_duration_seconds_bucket",
    "ferry_pod_volume_operation_duration_seconds_sum",
    "ferry_pod_volume_operation_duration_seconds_count",
    "ferry_pod_volume_bytes_total", "ferry_pod_volume_files_total",
    "ferry_pod_volume_operations_in_progress", "ferry_pod_volume_progress_bytes",
}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}

failures = []

def fail(message):
    failures.append(message)
    print("FAIL: " + message, file=sys.stderr)

def metric_names(expr):
    """The metric names an expression selects (enough PromQL for Ferry's queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                      # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                     # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end():].lstrip()
        if word.lower() in KEYWORDS or after.startswith("("):
            continue
        names.add(word)
    return names

def check_metrics(where, expr):
    unknown = metric_names(expr) - ALLOWED
    if unknown:
        fail(f"{where}: metrics Ferry does not export: {sorted(unknown)}")

class Dumper(yaml.SafeDumper):
    # Lists indented under their key, as in the rule file.
    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)

def represent_str(dumper, value):
    style = "|" if "\n" in value else ">" if len(value) > 80 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

Dumper.add_representer(str, represent_str)

with open(RULE_FILE) as f:
    groups = yaml.safe_load(f)["groups"]

if os.environ["WRITE"] == "yes":
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ferry", "namespace": "ferry",
                     "labels": {"app.kubernetes.io/name": "ferry",
                                "app.kubernetes.io/part-of": "ferry"}},
        "spec": {"groups": groups},
    }
    header = (
        "# Ferry's alerts for the Prometheus Operator. Do not edit: made from\n"
        "# rules/ferry.rules.yaml (where they are commented and unit-tested) by\n"
        "# `bash check.sh --write`; `bash check.sh` fails when the two differ.\n"
        "# A Prometheus loads it only if its ruleSelector matches these labels (kube-prometheus-stack:\n"
        "# its `release` label, or ruleSelectorNilUsesHelmValues: false).\n"
    )
    with open(RULE_OBJECT, "w") as f:
        f.write(header)
        yaml.dump(rule, f, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    print(f"wrote {RULE_OBJECT}")

with open(RULE_OBJECT) as f:
    rule = yaml.safe_load(f)
if rule.get("kind") != "PrometheusRule":
    fail(f"{RULE_OBJECT} is not a PrometheusRule")
elif rule.get("spec", {}).get("groups") != groups:
    fail(f"{RULE_OBJECT} spec.groups differ from {RULE_FILE}: run `bash check.sh --write`")
else:
    print(f"ok: {RULE_OBJECT} holds the groups of {RULE_FILE}")

for group in groups:
    for r in group["rules"]:
        check_metrics(f"{RULE_FILE} {r.get('alert') or r.get('record')}", r["expr"])

try:
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
except ValueError as err:
    fail(f"{DASHBOARD} is not JSON: {err}")
    dashboard = {}

def targets(panels):
    for panel in panels or []:
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel.get("title", "?"), target["expr"]
        yield from targets(panel.get("panels"))

# Grafana's interval variables as plausible values, so that promtool can parse the queries.
queries = []
for title, expr in targets(dashboard.get("panels")):
    check_metrics(f"{DASHBOARD} panel {title!r}", expr)
    for name, value in (("$__rate_interval", "2m"), ("$__interval", "1m"), ("$__range", "1d")):
        expr = expr.replace(name, value)
    queries.append({"record": f"ferry:dashboard:query_{len(queries) + 1}", "expr": expr})
if not queries:
    fail(f"{DASHBOARD} has no queries")
with open(os.path.join(os.environ["SCRATCH"], "dashboard-queries.yaml"), "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}, f)
print(f"ok: {len(queries)} dashboard queries use only Ferry's metrics")

sys.exit(1 if failures else 0)
PY

echo "promtool: the dashboard's queries parse"
promtool check rules "$scratch/dashboard-queries.yaml" >/dev/null
promtool check rules rules/ferry.rules.yaml
promtool test rules rules/ferry.rules.test.yaml

if command -v kubectl >/dev/null; then
  kubectl kustomize ../overlays/monitoring >"$scratch/rendered.yaml"
  RENDERED="$scratch/rendered.yaml" python3 - <<'PY'
import json, os, sys
import yaml

objects = [o for o in yaml.safe_load_all(open(os.environ["RENDERED"])) if o]
groups = yaml.safe_load(open("rules/ferry.rules.yaml"))["groups"]
dashboard = json.load(open("dashboards/ferry.json"))
rules = [o for o in objects if o["kind"] == "PrometheusRule"]
maps = [o for o in objects if o["kind"] == "ConfigMap"
        and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
monitors = [o for o in objects if o["kind"] == "PodMonitor"]
problems = []
if len(rules) != 1 or rules[0]["spec"]["groups"] != groups:
    problems.append("the rendered PrometheusRule does not hold the rule file's groups")
if len(maps) != 1 or json.loads(maps[0]["data"]["ferry.json"]) != dashboard:
    problems.append("the rendered dashboard ConfigMap does not hold dashboards/ferry.json")
if len(monitors) != 2:
    problems.append(f"{len(monitors)} PodMonitors rendered, not 2")
for o in rules + maps + monitors:
    meta = o["metadata"]
    if meta.get("namespace") != "ferry" or meta.get("labels", {}).get("app.kubernetes.io/part-of") != "ferry":
        problems.append(f"{o['kind']} {meta['name']}: not in ferry, or without app.kubernetes.io/part-of")
for p in problems:
    print("FAIL: " + p, file=sys.stderr)
if problems:
    sys.exit(1)
print("ok: deploy/overlays/monitoring renders the rules, PodMonitors and dashboard")
PY
else
  echo "kubectl not found: the render of deploy/overlays/monitoring is not checked"
fi
echo "all checks passed"
