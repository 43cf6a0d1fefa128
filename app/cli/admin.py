"""`lookout apikey | maintain | models | people`: administer a Lookout installation."""

import argparse
import asyncio
import re
import sys
import time
from datetime import timedelta

import httpx

from app.apikeys import service
from app.cli.common import api_error, client_config, require, unreachable
from app.db import (
    close_redis,
    create_engine,
    create_frames_redis,
    create_redis,
    create_sessionmaker,
)
from app.errors import AppError, InvalidInput
from app.maintenance import run_maintenance
from app.settings import Settings
from app.storage import Storage
from clients.gallery import ImportReport, enroll_people, import_people, people_in


async def people_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.people_command == "enroll":
        people = {args.name: list(args.photos)}
    else:
        if not args.directory.is_dir():
            print(f"lookout: no such directory: {args.directory}", file=sys.stderr)
            return 1
        people = {name: photos for name, photos in people_in(args.directory).items() if photos}
        if not people:
            print(
                f"lookout: no photos in {args.directory}: lay them out as DIR/<person name>/*.jpg",
                file=sys.stderr,
            )
            return 1
    missing = [str(p) for photos in people.values() for p in photos if not p.is_file()]
    if missing:
        print(f"lookout: no such photo: {', '.join(missing)}", file=sys.stderr)
        return 1
    config = client_config(settings, args)
    try:
        async with httpx.AsyncClient(
            base_url=config.url, headers=config.headers, timeout=config.timeout_s
        ) as client:
            if args.people_command == "import":
                return _import_report(await import_people(client, people))
            lines = await enroll_people(client, people)
    except httpx.TransportError as exc:
        return unreachable(config.url, exc)
    except httpx.HTTPStatusError as exc:
        return api_error(exc.response)
    print("\n".join(lines))
    return 0 if all(line.startswith("ok") for line in lines) else 1


def _import_report(report: ImportReport) -> int:
    """Print what the import did; exit 1 only when a part of it failed (a refused photo is
    an answer, listed with its reason)."""
    print(
        f"{report.photos} photos: {report.enrolled} enrolled, {report.duplicates} already "
        f"enrolled (duplicates), {report.refused} refused; {report.people_created} new people"
    )
    for problem in report.problems:
        print(f"refused {problem}")
    for failure in report.failures:
        print(f"lookout: part of the import failed: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


_DURATION = re.compile(r"^(\d+)([dhms])$")
_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90d, 12h, 30m")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def run_apikey(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(apikey_command(settings, args))
    except AppError as exc:
        print(f"lookout: {exc.detail}", file=sys.stderr)
        return 1


async def apikey_command(settings: Settings, args: argparse.Namespace) -> int:
    require(settings.database.url, "LOOKOUT_DATABASE__URL")
    engine = create_engine(settings.database)
    try:
        if args.apikey_command == "create":
            expires_in = parse_duration(args.expires_in) if args.expires_in else None
            # Committed before it is printed: a key shown to someone is a key that exists.
            async with create_sessionmaker(engine).begin() as session:
                key, token = await service.create_key(
                    session,
                    name=args.name,
                    scopes=service.parse_scopes(args.scopes),
                    expires_in=expires_in,
                    rate_limit=args.rate_limit,
                )
            print(token, flush=True)
            expiry = key.expires_at.isoformat() if key.expires_at else "never"
            print(
                f"created key {key.prefix} ({args.name}; scopes {','.join(key.scopes)}; "
                f"expires {expiry}; rate limit {_limit_text(key.rate_limit, settings)}). "
                "The key is shown only this once.",
                file=sys.stderr,
            )
            return 0
        async with create_sessionmaker(engine).begin() as session:
            if args.apikey_command == "limit":
                key = await service.set_rate_limit(
                    session, args.prefix, _parse_limit(args.requests)
                )
                print(f"key {key.prefix} ({key.name}): {_limit_text(key.rate_limit, settings)}")
                return 0
            if args.apikey_command == "list":
                print(
                    "PREFIX        NAME                 SCOPES             STATE    "
                    "RATE LIMIT          LAST USED"
                )
                for key in await service.list_keys(session):
                    state = (
                        "revoked"
                        if key.revoked_at
                        else "expired"
                        if key.expires_at and key.expires_at.timestamp() <= time.time()
                        else "active"
                    )
                    last = (
                        key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "-"
                    )
                    limit = _limit_text(key.rate_limit, settings)
                    print(
                        f"{key.prefix:<13} {key.name[:20]:<20} {','.join(key.scopes):<18} "
                        f"{state:<8} {limit:<19} {last}"
                    )
            else:
                key = await service.revoke_key(session, args.prefix)
                print(f"revoked key {key.prefix} ({key.name})")
    finally:
        await engine.dispose()
    return 0


def _parse_limit(raw: str) -> int | None:
    if raw.strip().lower() == "default":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"not a number of requests: {raw!r} (or `default`)") from None


def _limit_text(rate_limit: int | None, settings: Settings) -> str:
    """What the key may do, and whose limit it is: `600/60s`, `none`, `600/60s (default)`."""
    window = settings.auth.rate_limit_window_s
    if rate_limit is None:
        default = settings.auth.rate_limit_requests
        return "none (default)" if default == 0 else f"{default}/{window}s (default)"
    return "none" if rate_limit == 0 else f"{rate_limit}/{window}s"


async def maintain_once(settings: Settings) -> int:
    require(settings.database.url, "LOOKOUT_DATABASE__URL")
    engine = create_engine(settings.database)
    redis = create_redis(settings.redis)
    frames_redis = create_frames_redis(settings.redis, redis)
    try:
        report = await run_maintenance(
            settings,
            create_sessionmaker(engine),
            redis,
            Storage(settings.storage_dir),
            frames_redis=frames_redis,
            sweep_now=True,  # run by hand or from cron: do it all
        )
    finally:
        await close_redis(redis, frames_redis)
        await engine.dispose()
    print(
        f"re-enqueued {report.reenqueued} jobs, {report.lost_frames} node frames lost; "
        f"{report.images_expired} images expired, {report.images_evicted} evicted "
        f"({report.bytes_freed} bytes freed); {report.jobs_deleted} jobs deleted"
    )
    return 0


def run_maintain(settings: Settings, _args: argparse.Namespace) -> int:
    return asyncio.run(maintain_once(settings))


def run_people(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(people_command(settings, args))
