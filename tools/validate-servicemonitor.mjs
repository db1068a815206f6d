// Validate ServiceMonitor manifests against the Prometheus Operator's CRD schema (as generated into
// @kubernetes-models/prometheus-operator). kubernetes-validate has no schema for the CRD and only warns.
// Usage: node tools/validate-servicemonitor.mjs FILE...   Exit 1 with the first problem, 0 when all pass.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    if (!object || object.kind !== "ServiceMonitor") continue;
    try {
      new ServiceMonitor(object).validate();
    } catch (error) {
      console.error(`${file}: ServiceMonitor ${object.metadata?.name}: ${error.message.split("\n")[0]}`);
      process.exit(1);
    }
    checked += 1;
  }
}
if (checked === 0) {
  console.error("no ServiceMonitor found");
  process.exit(1);
}
console.log(`${checked} ServiceMonitor(s) valid`);
