// Apollo Client's BatchHttpLink against the gateway, as a client team's app uses it: queries
// issued together go out as one POST. Usage: node apollo_batch.mjs URL ID...
// Prints {posts, products, invalid}: how many POSTs went out, each query's product, and what
// the client made of an operation the gateway refuses (errorPolicy "all").
import { ApolloClient, InMemoryCache, gql } from "@apollo/client";
import { BatchHttpLink } from "@apollo/client/link/batch-http";

const [url, ...ids] = process.argv.slice(2);
let posts = 0;
const client = new ApolloClient({
  link: new BatchHttpLink({
    uri: url,
    batchMax: 10,
    batchInterval: 20,
    fetch: (input, init) => { posts += 1; return fetch(input, init); },
  }),
  cache: new InMemoryCache(),
});
const PRODUCT = gql`query Product($id: ID!) {
  product(id: $id) { id name reviews(first: 2) { id author { name } } } }`;
const INVALID = gql`query Invalid { product(id: "p1") { id notAField } }`;
const [invalid, ...products] = await Promise.all([
  client.query({ query: INVALID, errorPolicy: "all" }),
  ...ids.map((id) => client.query({ query: PRODUCT, variables: { id } })),
]);
console.log(JSON.stringify({
  posts,
  products: products.map((r) => r.data.product),
  invalid: { data: invalid.data ?? null, error: invalid.error ? {
    message: invalid.error.message,
    codes: (invalid.error.errors ?? []).map((e) => e.extensions?.code) } : null },
}));
