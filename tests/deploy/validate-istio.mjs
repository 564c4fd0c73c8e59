// Validates Istio objects against Istio's CRD schemas as shipped in npm @kubernetes-models/istio.
// Input: JSON lines on stdin, one object per line, each {"file": ..., "object": {...}} (the shell
// side turns the YAML into JSON). Every object must be an Istio kind this script knows, and valid.
// Before the real input it proves the validator is live: a WasmPlugin with an unknown failStrategy
// must be refused. Exit 0 only when every object passed; prints "N passed, 0 failed".
//
// TrafficExtension (Istio 1.30+) is in no offline package (@kubernetes-models/istio 3.0.1 stops
// at WasmPlugin): it is checked with ajv against trafficextension-v1alpha1.schema.json beside this
// script (transcribed from Istio's CRD, its source in its $comment), and its `wasm` block, which
// uses the same enums and types as a WasmPlugin's spec, also against npm's WasmPlugin schema.
// Broken TrafficExtensions must be refused first.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import Ajv from "ajv";
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";
import { EnvoyFilter } from "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter";
import { Gateway } from "@kubernetes-models/istio/networking.istio.io/v1/Gateway";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { DestinationRule } from "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule";
import { ServiceEntry } from "@kubernetes-models/istio/networking.istio.io/v1/ServiceEntry";

const kinds = {
  "extensions.istio.io/v1alpha1 WasmPlugin": WasmPlugin,
  "networking.istio.io/v1alpha3 EnvoyFilter": EnvoyFilter,
  "networking.istio.io/v1 Gateway": Gateway,
  "networking.istio.io/v1 VirtualService": VirtualService,
  "networking.istio.io/v1 DestinationRule": DestinationRule,
  "networking.istio.io/v1 ServiceEntry": ServiceEntry,
};

const teSchema = JSON.parse(readFileSync(new URL("./trafficextension-v1alpha1.schema.json", import.meta.url), "utf8"));
const teValidate = new Ajv({ allErrors: true, strict: false }).compile(teSchema);

function checkTrafficExtension(obj) {
  if (!teValidate(obj)) {
    throw new Error(teValidate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; "));
  }
  if (obj.spec.wasm) {
    // The WasmConfig fields are a WasmPlugin's spec fields of the same names and types.
    new WasmPlugin({ apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugin", metadata: obj.metadata,
                     spec: { ...obj.spec.wasm, ...(obj.spec.match ? { match: obj.spec.match } : {}) } }).validate();
  }
}

function check(obj) {
  if (`${obj.apiVersion} ${obj.kind}` === "extensions.istio.io/v1alpha1 TrafficExtension") {
    return checkTrafficExtension(obj);
  }
  const cls = kinds[`${obj.apiVersion} ${obj.kind}`];
  if (!cls) throw new Error(`not an Istio kind this check knows: ${obj.apiVersion} ${obj.kind}`);
  new cls(obj).validate();
}

// The validator must refuse a broken object, or it proves nothing.
let refused = false;
try {
  check({ apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugin", metadata: { name: "x" },
          spec: { url: "oci://x/y:1", failStrategy: "FAIL_SOMETIMES" } });
} catch { refused = true; }
if (!refused) { console.error("validate-istio: the schema accepted an invalid WasmPlugin"); process.exit(1); }

// The TrafficExtension check must accept a good one and refuse each broken one.
const te = (spec) => ({ apiVersion: "extensions.istio.io/v1alpha1", kind: "TrafficExtension",
                        metadata: { name: "x" }, spec });
const good = { selector: { matchLabels: { a: "b" } }, phase: "AUTHN", match: [{ ports: [{ number: 10250 }] }],
               wasm: { url: "oci://x/y:1", failStrategy: "FAIL_RELOAD", pluginConfig: { any: ["thing"] } } };
try { check(te(good)); } catch (e) {
  console.error(`validate-istio: the TrafficExtension schema refused a valid object: ${e.message}`); process.exit(1);
}
const broken = {
  "an unknown failStrategy": { ...good, wasm: { ...good.wasm, failStrategy: "FAIL_SOMETIMES" } },
  "an unknown wasm field": { ...good, wasm: { ...good.wasm, bogus: true } },
  "a WasmPlugin's phase spelling": { ...good, phase: "UNSPECIFIED_PHASE" },
  "the url at the top (WasmPlugin's place)": { ...good, url: "oci://x/y:1" },
  "both wasm and lua": { ...good, lua: { inlineCode: "function envoy_on_request(h) end" } },
  "neither wasm nor lua": { phase: "AUTHN" },
  "selector and targetRefs": { ...good, targetRefs: [{ kind: "Gateway", group: "gateway.networking.k8s.io", name: "g" }] },
  "a url scheme Istio refuses": { ...good, wasm: { ...good.wasm, url: "ftp://x/y.wasm" } },
  "a port out of range": { ...good, match: [{ ports: [{ number: 70000 }] }] },
  "a value with valueFrom HOST": { ...good, wasm: { ...good.wasm, vmConfig: { env: [{ name: "A", value: "1", valueFrom: "HOST" }] } } },
};
for (const [what, spec] of Object.entries(broken)) {
  let ok = true;
  try { check(te(spec)); } catch { ok = false; }
  if (ok) { console.error(`validate-istio: the TrafficExtension check accepted ${what}`); process.exit(1); }
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
