// The graphql-http package's audit of a GraphQL over HTTP server: prints one JSON line per
// audit ({id, name, status, reason}). Usage: node audit.mjs http://host:port/graphql
import { auditServer } from "graphql-http";

const url = process.argv[2];
const results = await auditServer({ url });
for (const result of results) {
  const { id, name, status } = result;
  let reason = result.reason;
  if (status !== "ok" && result.response) {
    const body = await result.response.text().catch(() => "");
    reason = `${reason} | status ${result.response.status} | ${body.slice(0, 300)}`;
  }
  console.log(JSON.stringify({ id, name, status, reason }));
}
