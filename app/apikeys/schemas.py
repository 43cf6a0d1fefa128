"""API schemas for API keys. Separate from the ORM table in app/models.py."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app import openapi_examples as examples
from app.security import Scope


class KeyOut(BaseModel):
    """The key a request came with: never its secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.API_KEY]})

    name: str | None = Field(
        default=None, description="given at `lookout apikey create`; null with keys off"
    )
    prefix: str | None = Field(
        default=None,
        description="the part after `lk_`; null with keys off",
        examples=[examples.API_KEY["prefix"]],
    )
    scopes: list[Scope] = Field(
        description="read: its own jobs; write: upload and delete them; admin: everything "
        "(nodes, every key's jobs and people)",
        examples=[["read", "write"]],
    )
    expires_at: datetime | None = None
    auth_enabled: bool = Field(description="false: the server runs with keys off (dev)")
    rate_limit: int | None = Field(
        default=None,
        description="requests this key may make per rate_limit_window_s (its own limit, "
        "`lookout apikey limit`, or the server's default); null: not limited",
        examples=[600],
    )
    rate_limit_window_s: int = Field(examples=[60])
