// The page's calls (bundled by esbuild with the generated code in gen/): the edge's URL and the
// bearer token come in the URL's fragment (#edge=...&token=...), which is never sent to the page's server.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
import { HelloWorldService } from "./gen/rpc_package/helloworld_pb.js";

const params = new URLSearchParams(location.hash.slice(1));
const edge = params.get("edge");
const token = params.get("token");
const transport = createGrpcWebTransport({ baseUrl: edge, useBinaryFormat: true });
const client = createClient(HelloWorldService, transport);
const auth = { headers: { authorization: `Bearer ${token}` } };
const results = {};

function show(id, text, kind) {
  const cell = document.getElementById(id);
  cell.textContent = text;
  cell.className = kind;
  results[id] = text;
}

// "INVALID_ARGUMENT (3)": the gRPC code's name as gRPC spells it.
function codeName(code) {
  return `${Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase()} (${code})`;
}

async function step(id, call, kind = "ok") {
  try {
    show(id, await call(), kind);
  } catch (error) {
    show(id, `unexpected: ${error}`, "refused");
  }
}

await step("grpc-web", async () => (await client.sayHello({ name: "Browser" }, auth)).message);
await step("grpc-web-stream", async () => {
  const replies = [];
  for await (const reply of client.sayHelloRepeated({ name: "Stream", count: 3 }, auth)) {
    replies.push(`${reply.index}: ${reply.message}`);
  }
  return replies.join(" · ");
});
await step("json", async () => {
  const response = await fetch(`${edge}/rpc_package.HelloWorldService/SayHello`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ name: "Fetch" }),
  });
  return `${response.status}: ${(await response.json()).message}`;
});
try {
  await client.sayHello({ name: "" }, auth);
  show("refused", "not refused", "ok");
} catch (error) {
  const refusal = ConnectError.from(error);
  const violations = refusal.findDetails(BadRequestSchema).flatMap((detail) => detail.fieldViolations);
  const fields = violations.map((violation) => `${violation.field}: ${violation.description}`).join("; ");
  show("refused", `${codeName(refusal.code)}, BadRequest ${fields}`, "refused");
}
await step("json-refused", async () => {
  const response = await fetch(`${edge}/rpc_package.HelloWorldService/SayHello`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "Anon" }),
  });
  const status = await response.json();
  const reasons = status.details.map((detail) => `${detail["@type"].split(".").pop()} ${detail.reason}`).join(", ");
  return `${response.status}: ${codeName(status.code)}, ${reasons}`;
}, "refused");
document.getElementById("results").textContent = JSON.stringify(results);
document.body.dataset.done = "1";
