"""What one GraphQL request carries: its loaders, the acting user and the shared client."""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info as StrawberryInfo

from app.errors import Unauthenticated
from app.settings import Settings
from app.upstream import UpstreamClient
from loaders.registry import Loaders


@dataclass
class RequestContext:
    settings: Settings
    client: UpstreamClient
    loaders: Loaders
    user_id: str | None = None

    def require_user(self) -> str:
        if self.user_id is None:
            raise Unauthenticated("This operation needs a signed-in user")
        return self.user_id


Info = StrawberryInfo[RequestContext, None]
