// Validates custom resources (a JSON array on stdin) with the validators generated from their
// CRDs' OpenAPI schemas; kubernetes-validate bundles schemas for built-in kinds only.
// Exit status 1 and one line per invalid object, or a line per valid one.
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = {
  "gateway.networking.k8s.io/v1 HTTPRoute": HTTPRoute,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1 PrometheusRule": PrometheusRule,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const object of JSON.parse(input)) {
  const kind = `${object.apiVersion} ${object.kind}`;
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = models[kind];
  if (!Model) {
    console.log(`ERROR ${name}: no validator for ${kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`INFO ${name} passed`);
  } catch (error) {
    console.log(`ERROR ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
