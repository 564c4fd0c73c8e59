// Validates Prometheus Operator objects (PodMonitor, ServiceMonitor, PrometheusRule) against the
// operator's CRD schemas as shipped in npm @kubernetes-models/prometheus-operator (types, enums,
// required fields). Input: JSON lines on stdin, one object per line, each {"file": ..., "object": {...}}.
// Before the real input it proves the validator is live: a PodMonitor with a misspelt relabeling
// action and a PrometheusRule rule without `expr` must be refused. Exit 0 only when every object
// passed; prints "N passed, 0 failed".
// The CRD schemas allow unknown fields (the API server prunes them silently): PrometheusRule
// groups are also parsed strictly by promtool (tests/deploy/check-monitoring.py).
import { createInterface } from "node:readline";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = {
  "monitoring.coreos.com/v1 PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1 PrometheusRule": PrometheusRule,
};

function check(obj) {
  const cls = kinds[`${obj.apiVersion} ${obj.kind}`];
  if (!cls) throw new Error(`not a Prometheus Operator kind this check knows: ${obj.apiVersion} ${obj.kind}`);
  new cls(obj).validate();
}

// The validator must refuse broken objects, or it proves nothing.
for (const broken of [
  { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x" },
    spec: { selector: {}, podMetricsEndpoints: [{ relabelings: [{ action: "kep" }] }] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PrometheusRule", metadata: { name: "x" },
    spec: { groups: [{ name: "g", rules: [{ alert: "A" }] }] } },
]) {
  let refused = false;
  try { check(broken); } catch { refused = true; }
  if (!refused) { console.error(`validate-monitoring: the schema accepted an invalid ${broken.kind}`); process.exit(1); }
}

let passed = 0, failed = 0;
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { file, object } = JSON.parse(line);
  const name = `${file}: ${object.kind}/${object.metadata?.name}`;
  try { check(object); passed++; console.log(`ok   ${name}`); }
  catch (e) { failed++; console.log(`FAIL ${name}: ${e.message}`); }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
