// Apollo Gateway (@apollo/gateway, in Apollo Server) composing the gateway with the shipping
// subgraph, as a company that runs a supergraph would: IntrospectAndCompose reads each
// subgraph's `_service { sdl }` and composes them at start. The Authorization header of the
// client's request is passed on to every subgraph (the permissions are the subgraphs' to
// apply). Usage: node supergraph.mjs PORT NAME=URL... Prints "ready" once it listens.
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from "@apollo/gateway";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";

const [port, ...named] = process.argv.slice(2);
const subgraphs = named.map((pair) => {
  const [name, url] = pair.split("=");
  return { name, url };
});

class ForwardAuthorization extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    if (context.authorization) request.http.headers.set("authorization", context.authorization);
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: new IntrospectAndCompose({ subgraphs }),
  buildService: ({ url }) => new ForwardAuthorization({ url }),
});
const server = new ApolloServer({ gateway });
await startStandaloneServer(server, {
  listen: { port: Number(port), host: "127.0.0.1" },
  context: async ({ req }) => ({ authorization: req.headers.authorization }),
});
console.log("ready");
process.on("SIGTERM", async () => { await server.stop(); process.exit(0); });
