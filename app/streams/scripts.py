"""Lua scripts run by their SHA1 (EVALSHA): the script's text crosses the wire only when the
server does not know it yet (after a restart or SCRIPT FLUSH), and costs no extra command
otherwise (redis-py's pipelines would ask SCRIPT EXISTS each time)."""

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        # The name Redis files the script under (not a security hash).
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, redis: "Redis", *, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # EVAL runs it and caches it for the next EVALSHA
            return await redis.eval(self.source, len(keys), *keys, *args)
