"""python -m outbound_pipeline.sandbox: serve the sandbox iAdvize API (no real message is ever sent)."""

from __future__ import annotations

import argparse
import os
import shutil
import textwrap

from pydantic import ValidationError

from outbound_pipeline.config import ConfigError, Template, load_config
from outbound_pipeline.sandbox.faults import FAULT_KINDS, FaultConfig
from outbound_pipeline.sandbox.server import serve
from outbound_pipeline.sandbox.state import config_help

_EPILOG_INTRO = (
    "While it runs, POST /_sandbox/config changes its settings with a JSON object of any of these "
    "keys (the options above set them at start; an unknown key is refused with the list of the "
    "accepted ones):"
)
_EPILOG_END = (
    "Other admin endpoints: GET /_sandbox/messages, GET /_sandbox/conversations, "
    "GET /_sandbox/stats, POST /_sandbox/reset, "
    "POST /_sandbox/expire-tokens."
)


def _epilog() -> str:
    """The /_sandbox/config keys, wrapped as argparse wraps the rest of the help."""
    width = min(100, shutil.get_terminal_size().columns - 2)
    return "\n".join(
        [
            textwrap.fill(_EPILOG_INTRO, width),
            config_help(width),
            "",
            textwrap.fill(_EPILOG_END, width),
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m outbound_pipeline.sandbox",
        description=__doc__,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help="campaigns YAML whose templates the sandbox knows (default: $OUTBOUND_CONFIG, else "
        "the bundled demo)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="fixed delay per GraphQL call"
    )
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability a mutation gets a fault"
    )
    parser.add_argument(
        "--fault-kinds",
        default="",
        help=f"comma-separated, among: {', '.join(sorted(FAULT_KINDS))}",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the fault draws (reproducible)"
    )
    parser.add_argument(
        "--retry-after-seconds", type=float, default=1.0, help="Retry-After of http_429"
    )
    parser.add_argument(
        "--hang-seconds", type=float, default=30.0, help="hang of timeout_after_receive"
    )
    parser.add_argument(
        "--token-ttl-seconds", type=int, default=86400, help="lifetime of the tokens it issues"
    )
    parser.add_argument(
        "--login-limit-per-minute",
        type=int,
        default=10,
        help="logins a minute per username (iAdvize's policy), HTTP 429 beyond; 0 = off",
    )
    parser.add_argument(
        "--enforce-pair-rate-seconds",
        type=float,
        default=0.0,
        help="answer WhatsApp error 131056 to a second message to one recipient within this delay",
    )
    return parser


def _announce(url: str, templates: list[Template]) -> None:
    print(f"sandbox iAdvize listening on {url}", flush=True)
    print(
        f"  GraphQL: {url}/graphql   token: {url}/oauth2/token   admin: {url}/_sandbox/stats",
        flush=True,
    )
    print(
        f"  templates: {', '.join(f'{t.name}/{t.language}' for t in templates) or 'none'}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = FaultConfig(
            rate=args.fault_rate,
            kinds=[k.strip() for k in args.fault_kinds.split(",") if k.strip()],
            seed=args.seed,
            retry_after_seconds=args.retry_after_seconds,
            hang_seconds=args.hang_seconds,
        )
    except ValidationError as exc:
        parser.error("invalid faults: " + exc.errors()[0]["msg"].removeprefix("Value error, "))
    try:
        templates = load_config(args.config or os.environ.get("OUTBOUND_CONFIG")).templates
    except ConfigError as exc:
        parser.error(str(exc))

    serve(
        args.host,
        args.port,
        templates,
        on_started=lambda url: _announce(url, templates),
        latency_ms=args.latency_ms,
        faults=faults,
        token_ttl_seconds=args.token_ttl_seconds,
        enforce_pair_rate_seconds=args.enforce_pair_rate_seconds,
        login_limit_per_minute=args.login_limit_per_minute,
    )


if __name__ == "__main__":
    main()
