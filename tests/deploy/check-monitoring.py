#!/usr/bin/env python3
"""Checks the monitoring bundle (envoy/kubernetes/monitoring) with promtool; run by
scripts/check-deploy.sh. A failure exits non-zero with a message naming the file and what to fix.

- the PrometheusRule: every alert has a `severity` label and the annotations `summary`,
  `description` and `runbook_url`; every runbook_url points at a heading of docs/DEPLOY.md
  (GitHub's anchor of it) and every alert has its own;
- `promtool check rules` on its groups;
- `promtool test rules` on monitoring/tests/*.yaml: the tests run against the groups as they are
  (kubelet-authz.rules.yaml) or without annotations (kubelet-authz.rules-bare.yaml, so a test
  states labels only); every alert must have an evaluation where it fires and one where it does
  not;
- the tests can fail: for each alert, a copy of the rules where that alert never fires and one
  where it always fires must each make `promtool test rules` fail;
- the Grafana dashboard: valid JSON with a uid and a title; every PromQL query (panel targets,
  rows' panels, the query variables' label_values() selectors) is written, with Grafana's
  variables replaced, as a recording rule into a rule file that `promtool check rules` must
  accept.

Usage: check-monitoring.py REPO_ROOT WORK_DIR
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

RULES_NAME = "kubelet-authz.rules.yaml"
BARE_NAME = "kubelet-authz.rules-bare.yaml"


def die(msg: str) -> None:
    sys.exit(f"check-monitoring: {msg}")


def github_anchors(markdown: str) -> set:
    """The anchors GitHub gives the headings of a Markdown file (lower case, punctuation but
    `-` and `_` removed, spaces to `-`; repeated headings get -1, -2, ...)."""
    anchors, seen, fence = set(), {}, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"`", "", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)


def write_rules(groups: list, work: Path) -> None:
    (work / RULES_NAME).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    bare = json.loads(json.dumps(groups))
    for g in bare:
        for r in g["rules"]:
            r.pop("annotations", None)
    (work / BARE_NAME).write_text(yaml.safe_dump({"groups": bare}, sort_keys=False))


def check_rules(root: Path, work: Path) -> tuple:
    mon = root / "envoy/kubernetes/monitoring"
    pr_file = mon / "prometheusrule.yaml"
    pr = yaml.safe_load(pr_file.read_text())
    if pr.get("kind") != "PrometheusRule":
        die(f"{pr_file}: expected a PrometheusRule")
    groups = pr["spec"]["groups"]
    deploy_md = root / "docs/DEPLOY.md"
    anchors = github_anchors(deploy_md.read_text())
    alerts, runbooks = [], {}
    for g in groups:
        for r in g["rules"]:
            name = r.get("alert")
            if not name:
                continue
            alerts.append(name)
            where = f"{pr_file.name}: alert {name}"
            if r.get("labels", {}).get("severity") is None:
                die(f"{where}: no labels.severity")
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not str(ann.get(key, "")).strip():
                    die(f"{where}: no annotations.{key}")
            url = ann["runbook_url"]
            m = re.fullmatch(r"https://\S+/docs/DEPLOY\.md#([\w-]+)", url)
            if not m:
                die(f"{where}: runbook_url {url} does not point at a section of docs/DEPLOY.md")
            if m.group(1) not in anchors:
                die(f"{where}: runbook_url anchor #{m.group(1)} is no heading of docs/DEPLOY.md: write that runbook section")
            if m.group(1) in runbooks.values():
                die(f"{where}: runbook section #{m.group(1)} is already another alert's")
            runbooks[name] = m.group(1)
    if len(set(alerts)) != len(alerts):
        die(f"{pr_file}: an alert name is used twice")
    write_rules(groups, work)
    out = promtool("check", "rules", RULES_NAME, cwd=work)
    if out.returncode != 0:
        die(f"promtool check rules {pr_file}:\n{out.stdout}{out.stderr}")
    print(f"promtool check rules: {len(alerts)} alerts, each with severity, summary, description and a runbook section")
    return groups, alerts


def check_tests(root: Path, work: Path, groups: list, alerts: list) -> None:
    tests = sorted((root / "envoy/kubernetes/monitoring/tests").glob("*.yaml"))
    if not tests:
        die("no promtool tests in envoy/kubernetes/monitoring/tests")
    fires, silent = set(), set()
    for t in tests:
        doc = yaml.safe_load(t.read_text())
        for rf in doc.get("rule_files", []):
            if rf not in (RULES_NAME, BARE_NAME):
                die(f"{t}: rule_files must be {RULES_NAME} or {BARE_NAME}, not {rf}")
        for case in doc.get("tests", []):
            for a in case.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
        shutil.copy(t, work / t.name)
    names = [t.name for t in tests]
    for a in alerts:
        if a not in fires:
            die(f"alert {a}: no promtool test where it fires (monitoring/tests)")
        if a not in silent:
            die(f"alert {a}: no promtool test where it stays silent (monitoring/tests)")
    unknown = (fires | silent) - set(alerts)
    if unknown:
        die(f"promtool tests name alerts that do not exist: {sorted(unknown)}")
    out = promtool("test", "rules", *names, cwd=work)
    if out.returncode != 0:
        die(f"promtool test rules:\n{out.stdout}{out.stderr}")
    print(f"promtool test rules: {len(names)} files, every alert fires where it should and stays silent on healthy series")

    # Mutants: each alert never firing, then always firing, must fail the tests.
    for a in alerts:
        for mutant, expr in (("never fires", "vector(1) == 2"), ("always fires", "vector(1)")):
            mutated = json.loads(json.dumps(groups))
            for g in mutated:
                for r in g["rules"]:
                    if r.get("alert") == a:
                        r["expr"] = expr
                        r.pop("for", None)
            write_rules(mutated, work)
            if promtool("test", "rules", *names, cwd=work).returncode == 0:
                die(f"alert {a}: the promtool tests pass even when it {mutant}: test it")
    write_rules(groups, work)
    print(f"promtool test rules: each of the {len(alerts)} alerts made to never fire and to always fire fails the tests")


GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1h",
    "${__range}": "1h",
}


def dashboard_queries(d: dict) -> list:
    out = []

    def panels(ps):
        for p in ps:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
            panels(p.get("panels", []))

    panels(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
        if not m:
            die(f"dashboard variable {v.get('name')}: expected label_values(SELECTOR, LABEL), got {q!r}")
        out.append((f"variable {v.get('name')}", m.group(1)))
    return out


def check_dashboard(root: Path, work: Path) -> None:
    f = root / "envoy/kubernetes/monitoring/grafana-dashboard.json"
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        die(f"{f}: not JSON: {e}")
    for key in ("uid", "title", "panels"):
        if not d.get(key):
            die(f"{f}: no {key}")
    queries = dashboard_queries(d)
    if len(queries) < 10:
        die(f"{f}: only {len(queries)} queries found; the extraction is broken")
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    rules = []
    for i, (where, expr) in enumerate(queries):
        e = expr
        for k, v in GRAFANA_VARS.items():
            e = e.replace(k, v)
        for name in variables:
            e = e.replace("${" + name + "}", ".*").replace("$" + name, ".*")
        if "$" in e:
            die(f"{f}: {where}: unknown Grafana variable in {expr!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    (work / "dashboard.rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]}, sort_keys=False))
    out = promtool("check", "rules", "dashboard.rules.yaml", cwd=work)
    if out.returncode != 0:
        die(f"{f}: promtool does not parse every query:\n{out.stdout}{out.stderr}")
    # promtool must refuse a broken query, or the check proves nothing.
    (work / "broken.rules.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (a (rate(x[5m]))"}]}]}))
    if promtool("check", "rules", "broken.rules.yaml", cwd=work).returncode == 0:
        die("promtool check rules accepted a broken query")
    print(f"grafana-dashboard.json: {len(queries)} PromQL queries, all parsed by promtool")


def main() -> None:
    if len(sys.argv) != 3:
        die("usage: check-monitoring.py REPO_ROOT WORK_DIR")
    root, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    if shutil.which("promtool") is None:
        die("promtool is missing: run scripts/setup.sh (Debian package prometheus)")
    groups, alerts = check_rules(root, work)
    check_tests(root, work, groups, alerts)
    check_dashboard(root, work)


if __name__ == "__main__":
    main()
