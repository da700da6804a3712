// The npm clients client teams use, against the gateway: graphql-ws (with the ws package, as
// Node 20 has no global WebSocket) or graphql-sse (distinct connections mode). Subscribes with
// a bearer token, prints each payload as a JSON line, and exits after COUNT of them.
// Usage: node js_subscribe.mjs ws|sse URL TOKEN QUERY COUNT
import WebSocket from "ws";
import { createClient as createWsClient } from "graphql-ws";
import { createClient as createSseClient } from "graphql-sse";

const [protocol, url, token, query, count] = process.argv.slice(2);
const auth = `Bearer ${token}`;
const client = protocol === "ws"
  ? createWsClient({ url: url.replace(/^http/, "ws"), webSocketImpl: WebSocket,
                     connectionParams: { Authorization: auth }, retryAttempts: 0 })
  : createSseClient({ url, headers: { Authorization: auth }, retryAttempts: 0 });
let received = 0;
const unsubscribe = client.subscribe({ query }, {
  next(value) {
    console.log(JSON.stringify(value));
    if (++received >= Number(count)) {
      unsubscribe();
      process.exit(0);
    }
  },
  error(error) {
    const detail = error instanceof Error ? error.message
      : { code: error?.code, reason: error?.reason, errors: error };
    console.error(JSON.stringify({ error: detail }));
    process.exit(2);
  },
  complete() { process.exit(0); },
});
