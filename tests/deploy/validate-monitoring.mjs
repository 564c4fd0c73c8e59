// Validates Prometheus Operator objects (PodMonitor, ServiceMonitor, PrometheusRule) against the
// operator's CRD schemas as shipped in npm @kubernetes-models/prometheus-operator (types, enums,
// required fields). Input: JSON lines on stdin, one object per line, each {"file": ..., "object": {...}}.
// Before the real input it proves the validator is live: a PodMonitor with a misspelt relabeling
// action and a PrometheusRule rule without `expr` must be refused. Exit 0 only when every object
// passed; prints "N passed, 0 failed".
// The CRD schemas allow unknown fields (the API server would prune them silently: a misspelt
// `relabelings` would just vanish), so every field is also looked up in the package's type
// declarations (the .d.ts beside each model, generated from the same schemas): a field no
// declaration names is refused, as kubernetes-validate --strict does for core kinds.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = {
  "monitoring.coreos.com/v1 PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1 PrometheusRule": PrometheusRule,
};

const NODE_MODULES = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules");
const V1 = path.join(NODE_MODULES, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");

// One .d.ts: its imports (name -> file), exported aliases (name -> interface) and interfaces
// (name -> { extends, props: field -> type }).
const parsed = new Map();
function parse(file) {
  if (parsed.has(file)) return parsed.get(file);
  const text = readFileSync(file, "utf8");
  const imports = new Map(), aliases = new Map(), ifaces = new Map();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) imports.set(m[1], resolve(m[2], file));
  for (const m of text.matchAll(/^export type \{ (\w+) as (\w+)/gm)) aliases.set(m[2], m[1]);
  for (const m of text.matchAll(/^export interface (\w+)(?: extends ([^{]+))? \{\n([\s\S]*?)^\}/gm)) {
    const props = new Map();
    for (const p of m[3].matchAll(/^ {4}"([^"]+)"\??: (.+?);?$/gm)) props.set(p[1], p[2]);
    ifaces.set(m[1], { extends: (m[2] || "").split(",").map((x) => x.trim()).filter(Boolean), props });
  }
  const d = { file, imports, aliases, ifaces };
  parsed.set(file, d);
  return d;
}
function resolve(spec, from) {
  if (spec.startsWith(".")) return path.resolve(path.dirname(from), spec.replace(/\.js$/, "") + ".d.ts");
  return path.join(NODE_MODULES, spec + ".d.ts");
}
// The interface a type name stands for in file d: [file, interface] or null (a scalar, a union,
// a map: not walked).
function lookup(d, name) {
  if (d.ifaces.has(name)) return [d, name];
  const f = d.imports.get(name);
  if (!f) return null;
  let t;
  try { t = parse(f); } catch { return null; }
  const local = t.aliases.get(name) || name;
  return t.ifaces.has(local) ? [t, local] : null;
}
function fields(d, name, seen = new Set()) {
  const out = new Map();
  if (seen.has(`${d.file}#${name}`)) return out;
  seen.add(`${d.file}#${name}`);
  const i = d.ifaces.get(name);
  for (const e of i.extends) {
    const r = lookup(d, e.replace(/<.*$/, ""));
    if (r) for (const [k, v] of fields(r[0], r[1], seen)) out.set(k, [v[0], v[1]]);
  }
  for (const [k, v] of i.props) out.set(k, [d, v]);
  return out;
}
function strict(value, d, name, where) {
  if (Array.isArray(value)) { value.forEach((v, n) => strict(v, d, name, `${where}[${n}]`)); return; }
  if (value === null || typeof value !== "object") return;
  const known = fields(d, name);
  for (const [k, v] of Object.entries(value)) {
    const f = known.get(k);
    if (!f) throw new Error(`${where}.${k}: unknown field (the CRD has no such field; the API server would drop it)`);
    const type = f[1].replace(/^Array<(.*)>$/, "$1");
    const r = /^\w+$/.test(type) ? lookup(f[0], type) : null;
    if (r) strict(v, r[0], r[1], `${where}.${k}`);
  }
}

function check(obj) {
  const cls = kinds[`${obj.apiVersion} ${obj.kind}`];
  if (!cls) throw new Error(`not a Prometheus Operator kind this check knows: ${obj.apiVersion} ${obj.kind}`);
  new cls(obj).validate();
  strict(obj, parse(path.join(V1, `${obj.kind}.d.ts`)), `I${obj.kind}`, obj.kind);
}

// The validator must refuse broken objects, or it proves nothing.
for (const broken of [
  { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x" },
    spec: { selector: {}, podMetricsEndpoints: [{ relabelings: [{ action: "kep" }] }] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PrometheusRule", metadata: { name: "x" },
    spec: { groups: [{ name: "g", rules: [{ alert: "A" }] }] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x" },
    spec: { selector: {}, podMetricsEndpoints: [{ relabeling: [] }] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x", labls: {} },
    spec: { selector: {} } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "ServiceMonitor", metadata: { name: "x" },
    spec: { selector: { matchLabel: {} }, endpoints: [] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PrometheusRule", metadata: { name: "x" },
    spec: { groups: [{ name: "g", rules: [{ alert: "A", expr: "up", fore: "5m" }] }] } },
  { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x" },
    spec: { selector: {}, podMetricsEndpoints: [{ relabelings: [{ action: "keep", sourceLabel: ["a"] }] }] } },
]) {
  let refused = false;
  try { check(broken); } catch { refused = true; }
  if (!refused) { console.error(`validate-monitoring: the check accepted an invalid ${broken.kind}: ${JSON.stringify(broken)}`); process.exit(1); }
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
