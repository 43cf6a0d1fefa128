"""HTTP routes for API keys: the caller's own key. Keys are created and revoked with the CLI
(`lookout apikey`), never over HTTP."""

from fastapi import APIRouter

from app.apikeys import service
from app.apikeys.schemas import KeyOut
from app.deps import ApiKeyDep, SessionDep, SettingsDep

router = APIRouter(tags=["api keys"])


@router.get(
    "/v1/apikeys/me",
    response_model=KeyOut,
    summary="The key this request came with: name, prefix, scopes, expiry, rate limit",
)
async def get_own_key(principal: ApiKeyDep, session: SessionDep, settings: SettingsDep) -> KeyOut:
    """Any valid key may ask, whatever its scopes: clients (the dashboard) offer only what the
    key may do."""
    return await service.describe_key(session, principal, settings.auth)
