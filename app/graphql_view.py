"""The GraphQL endpoint: Strawberry's ASGI view with this gateway's per-request context."""

from __future__ import annotations

from typing import Any

import orjson
import strawberry
from strawberry.asgi import GraphQL

from app.context import RequestContext
from app.settings import Settings
from app.upstream import UpstreamClient
from loaders.registry import Loaders

USER_HEADER = "x-user-id"


class GatewayGraphQL(GraphQL[RequestContext, None]):
    def __init__(
        self, schema: strawberry.Schema, settings: Settings, client: UpstreamClient
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True)
        self.settings = settings
        self.client = client

    async def get_context(self, request: Any, response: Any) -> RequestContext:
        # Loaders are built here, per request, inside the running loop: aiodataloader binds
        # the loop it was created in, and a loader shared across requests would leak data.
        user_id = None
        if self.settings.dev_mode:
            user_id = request.headers.get(USER_HEADER) or None
        return RequestContext(
            settings=self.settings,
            client=self.client,
            loaders=Loaders(self.client, self.settings.fanout_concurrency),
            user_id=user_id,
        )

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
