// Validates Istio objects against Istio's CRD schemas as shipped in npm @kubernetes-models/istio.
// Input: JSON lines on stdin, one object per line, each {"file": ..., "object": {...}} (the shell
// side turns the YAML into JSON). Every object must be an Istio kind this script knows, and valid.
// Before the real input it proves the validator is live: a WasmPlugin with an unknown failStrategy
// must be refused. Exit 0 only when every object passed; prints "N passed, 0 failed".
import { createInterface } from "node:readline";
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

function check(obj) {
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
