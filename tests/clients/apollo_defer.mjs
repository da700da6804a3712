// Apollo Client 4's HttpLink with @defer against the gateway, as a client team's product page
// uses it (the incremental handler for graphql-js 17's format). Usage:
//   node apollo_defer.mjs URL TOKEN ID
// Prints {accept, contentType, results}: the Accept the link sent, the answer's media type,
// and every result the client emitted for the query, in order (its dataState, whether it
// was loading, and its data).
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQL17Alpha9Handler } from "@apollo/client/incremental";

const [url, token, id] = process.argv.slice(2);
let accept = null;
let contentType = null;
const client = new ApolloClient({
  link: new HttpLink({
    uri: url,
    headers: { authorization: `Bearer ${token}` },
    fetch: async (input, init) => {
      accept = new Headers(init.headers).get("accept");
      const response = await fetch(input, init);
      contentType = response.headers.get("content-type");
      return response;
    },
  }),
  cache: new InMemoryCache(),
  incrementalHandler: new GraphQL17Alpha9Handler(),
});
const PAGE = gql`query ProductPage($id: ID!) {
  product(id: $id) {
    id name price { amount currency }
    ... @defer(label: "reviews") { reviews(first: 3) { id rating author { id name } } }
  }
  me { id ... @defer(label: "recommendations") { recommendations(first: 3) { id name } } }
}`;
const results = [];
await new Promise((resolve, reject) => {
  const sub = client.watchQuery({ query: PAGE, variables: { id } }).subscribe({
    next: (result) => {
      results.push({ dataState: result.dataState, loading: result.loading,
                     data: result.data ?? null, error: result.error?.message ?? null });
      if (result.dataState === "complete" || result.error) { sub.unsubscribe(); resolve(); }
    },
    error: reject,
  });
});
console.log(JSON.stringify({ accept, contentType, results }));
