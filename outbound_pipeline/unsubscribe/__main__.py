"""python -m outbound_pipeline.unsubscribe: serve the unsubscribe endpoint.

GET /u/<token> shows a confirm button and records nothing; POST /u/<token> (the button, or an
RFC 8058 one-click POST) records the opt-out in outbound_suppressions, for every campaign.
"""

from __future__ import annotations

import argparse
import logging
import os

import sqlalchemy as sa

from outbound_pipeline.unsubscribe.app import create_app
from outbound_pipeline.unsubscribe.links import (
    MIN_SECRET_LENGTH,
    OLD_SECRETS_ENV,
    SECRET_ENV,
    UnsubscribeSecretError,
    verifying_secrets_from_env,
)
from outbound_pipeline.unsubscribe.ratelimit import RateLimit
from outbound_pipeline.unsubscribe.server import ServerOptions, serve
from outbound_pipeline.unsubscribe.suppressions import create_suppressions_table, suppressions
from outbound_pipeline.warehouse import create_engine

DB_URL_ENV = "OUTBOUND_UNSUBSCRIBE_DB_URL"
STATE_URL_ENV = "OUTBOUND_STATE_URL"

_EPILOG = f"""environment:
  {SECRET_ENV}   the signing secret of the links (at least {MIN_SECRET_LENGTH} characters;
                                required; never on the command line, where `ps` shows it)
  {OLD_SECRETS_ENV}
                                retired secrets, whitespace-separated: links signed with them
                                still work (rotate without breaking a link already sent)
  {DB_URL_ENV}   the database of outbound_suppressions (SQLite or PostgreSQL URL); a
                                PostgreSQL role with INSERT on that table alone is enough
  {STATE_URL_ENV}            used when {DB_URL_ENV} is not set
  FORWARDED_ALLOW_IPS           default of --forwarded-allow-ips (uvicorn's)

Behind a reverse proxy (TLS ends there), give its address to --forwarded-allow-ips so that the rate
limit counts each client by its own address, not the proxy's. See docs/unsubscribe.md."""


def _add_limits(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--rate-per-minute",
        type=float,
        default=30.0,
        help="sustained requests a minute per client (default: %(default)s)",
    )
    add(
        "--burst",
        type=int,
        default=10,
        help="requests a client may make at once (default: %(default)s)",
    )
    add(
        "--max-clients",
        type=int,
        default=10_000,
        help="clients whose rate is tracked at once (default: %(default)s)",
    )
    add(
        "--limit-concurrency",
        type=int,
        default=200,
        help="connections served at once; beyond, HTTP 503 (default: %(default)s)",
    )
    add(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the client address from X-Forwarded-For, from trusted proxies only (default: on)",
    )
    add(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        help="comma-separated addresses of the trusted proxies (default: %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m outbound_pipeline.unsubscribe",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=8088, help="port (default: %(default)s; 0 picks a free one)")
    add("--db-url", help=f"database URL (default: ${DB_URL_ENV}, else ${STATE_URL_ENV})")
    add(
        "--create-table",
        action="store_true",
        help="create outbound_suppressions if missing (needs CREATE rights), then serve",
    )
    _add_limits(parser)
    add(
        "--log-level",
        default="info",
        choices=["error", "warning", "info"],
        help="log level (default: %(default)s)",
    )
    return parser


def _engine(parser: argparse.ArgumentParser, args: argparse.Namespace) -> sa.Engine:
    url = args.db_url or os.environ.get(DB_URL_ENV) or os.environ.get(STATE_URL_ENV)
    if not url:
        parser.error(f"no database: pass --db-url or set {DB_URL_ENV} (or {STATE_URL_ENV})")
    try:
        engine = create_engine(url)
    except sa.exc.ArgumentError:
        # Not echoed: a URL may hold a password.
        parser.error(
            f"the database URL (--db-url, {DB_URL_ENV} or {STATE_URL_ENV}) is not a SQLAlchemy URL"
        )
    shown = engine.url.render_as_string(hide_password=True)
    try:
        if args.create_table:
            create_suppressions_table(engine)
        elif not sa.inspect(engine).has_table(suppressions.name):
            parser.error(
                f"{suppressions.name} does not exist in {shown}: create it with --create-table "
                "(as a role that may), or let the pipeline's state store create it"
            )
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        parser.error(f"cannot use {shown}: {type(exc).__name__}: {detail}")
    return engine


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        secrets = verifying_secrets_from_env()
        rate = RateLimit(args.rate_per_minute, args.burst, args.max_clients)
    except (UnsubscribeSecretError, ValueError) as exc:
        parser.error(str(exc))
    engine = _engine(parser, args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = ServerOptions(
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        limit_concurrency=args.limit_concurrency,
        log_level=args.log_level,
    )
    shown = engine.url.render_as_string(hide_password=True)

    def announce(url: str) -> None:
        print(
            f"unsubscribe endpoint listening on {url}/u/<token>, recording into {shown}", flush=True
        )

    serve(create_app(secrets, engine, rate_limit=rate), args.host, args.port, options, announce)


if __name__ == "__main__":
    main()
