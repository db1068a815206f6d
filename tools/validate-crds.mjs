// Validate custom resources against their operators' CRD schemas, as generated into @kubernetes-models:
// the Prometheus Operator's ServiceMonitor and cert-manager's Certificate, Issuer and ClusterIssuer.
// kubernetes-validate has no schema for these CRDs and only warns. Other kinds are skipped.
// Usage: node tools/validate-crds.mjs FILE...   Exit 1 with the first problem, 0 when all pass;
// prints "N KIND(s) valid" per kind found.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { ClusterIssuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/ClusterIssuer";
import { Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer";

const MODELS = {
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
  "cert-manager.io/v1 Certificate": Certificate,
  "cert-manager.io/v1 Issuer": Issuer,
  "cert-manager.io/v1 ClusterIssuer": ClusterIssuer,
};

const checked = new Map();
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    const Model = object && MODELS[`${object.apiVersion} ${object.kind}`];
    if (!Model) continue;
    try {
      new Model(object).validate();
    } catch (error) {
      console.error(`${file}: ${object.kind} ${object.metadata?.name}: ${error.message.split("\n")[0]}`);
      process.exit(1);
    }
    checked.set(object.kind, (checked.get(object.kind) ?? 0) + 1);
  }
}
if (checked.size === 0) {
  console.error("no ServiceMonitor, Certificate, Issuer or ClusterIssuer found");
  process.exit(1);
}
for (const [kind, count] of checked) console.log(`${count} ${kind}(s) valid`);
