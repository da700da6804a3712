// A second subgraph beside the gateway, as another team would run it: Apollo Server with
// @apollo/subgraph. It extends the gateway's Product with a shipping estimate that needs the
// product's price and weight (@requires: the router fetches them from the gateway first),
// and root fields of its own that name products and orders by id only (so the router asks
// the gateway's `_entities` for everything else about them, with the client's token).
// Usage: node shipping.mjs PORT. Prints "ready" once it listens.
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3",
                      import: ["@key", "@external", "@requires"])

  type Query {
    "The products that ship from stock today, by id (this subgraph knows only their ids)."
    shippable(ids: [ID!]!): [Product!]!
    "The parcels of these orders (an order the caller may not read is null)."
    tracking(orderIds: [ID!]!): [Order]!
  }

  type Order @key(fields: "id") {
    id: ID!
    "The carrier's number for the order's parcel."
    trackingNumber: String!
  }

  type Product @key(fields: "id") {
    id: ID!
    weightGrams: Int! @external
    price: Money! @external
    "What shipping one unit costs and how long it takes: free from 500.00, else by weight."
    shippingEstimate: ShippingEstimate! @requires(fields: "weightGrams price { amount currency }")
  }

  # The gateway's type, known here only as the required price's (so its fields are external).
  type Money {
    amount: Int! @external
    currency: String! @external
  }

  type ShippingEstimate {
    amount: Int!
    currency: String!
    days: Int!
  }
`);

const FREE_FROM = 50000; // minor units: 500.00

const resolvers = {
  Query: {
    shippable: (_, { ids }) => ids.map((id) => ({ __typename: "Product", id })),
    tracking: (_, { orderIds }) => orderIds.map((id) => ({ __typename: "Order", id })),
  },
  Order: {
    trackingNumber: (order) => `TRK-${order.id}`,
  },
  Product: {
    shippingEstimate(product) {
      const { weightGrams, price } = product;
      const amount = price.amount >= FREE_FROM ? 0 : 499 + Math.ceil(weightGrams / 100) * 10;
      return { amount, currency: price.currency, days: weightGrams > 2000 ? 5 : 2 };
    },
  },
};

const server = new ApolloServer({ schema: buildSubgraphSchema([{ typeDefs, resolvers }]) });
const port = Number(process.argv[2]);
await startStandaloneServer(server, { listen: { port, host: "127.0.0.1" } });
console.log("ready");
process.on("SIGTERM", async () => { await server.stop(); process.exit(0); });
