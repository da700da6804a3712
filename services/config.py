"""Settings for the reference services: defaults, then environment variables, then CLI flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.middleware import FAULT_FIELDS, Faults

SERVICE_NAMES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations",
                 "auth")
DEFAULT_PORTS = dict(zip(SERVICE_NAMES, range(8001, 8008), strict=True))
DEFAULT_SECRET = "dev-event-secret-change-me-0123456789abcdef"


@dataclass
class Config:
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    urls: dict[str, str] = field(default_factory=dict)
    seed: int = 42
    scale: float = 1.0
    event_secret: str = DEFAULT_SECRET
    event_webhooks: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    only: tuple[str, ...] = SERVICE_NAMES
    faults: dict[str, Faults] = field(default_factory=dict)
    recommendations_latency_ms: float = 20.0

    def url(self, name: str) -> str:
        return self.urls.get(name) or f"http://{self.host}:{self.ports[name]}"


def _fault_value(name: str, raw: str) -> Any:
    if name == "rate_limit_rps":
        return None if raw.strip().lower() in ("", "none", "null") else float(raw)
    if name == "error_status":
        return int(raw)
    if name == "bad_body":
        return raw.strip()
    if name == "seed":
        return int(raw)
    return float(raw)


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m services",
                                     description="Run the six reference domain services and the "
                                                 "authorization server.")
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"))
    for name in SERVICE_NAMES:
        parser.add_argument(f"--{name}-port", type=int,
                            default=int(env.get(f"{name.upper()}_PORT", DEFAULT_PORTS[name])))
    parser.add_argument("--seed", type=int, default=int(env.get("SEED", "42")))
    parser.add_argument("--scale", type=float, default=float(env.get("SCALE", "1")))
    parser.add_argument("--event-secret", default=env.get("EVENT_SECRET", DEFAULT_SECRET))
    parser.add_argument("--event-webhooks", default=env.get("EVENT_WEBHOOKS", ""))
    parser.add_argument("--data-dir", default=env.get("DATA_DIR") or None)
    parser.add_argument("--only", default=env.get("ONLY", ""),
                        help="comma-separated subset of services to run")
    for fault in FAULT_FIELDS:
        parser.add_argument(f"--fault-{fault.replace('_', '-')}", default=None,
                            help=f"{fault} for every service (FAULT_{fault.upper()})")
    args = parser.parse_args(argv)

    only = tuple(_split(args.only)) or SERVICE_NAMES
    unknown = [n for n in only if n not in SERVICE_NAMES]
    if unknown:
        parser.error(f"unknown services in --only: {', '.join(unknown)}")
    if len(args.event_secret.encode()) < 32:
        parser.error("EVENT_SECRET must be at least 32 bytes")
    if args.scale <= 0:
        parser.error("SCALE must be positive")

    # Fault settings: global env, then per-service env (CATALOG_FAULT_...), then global flags.
    faults: dict[str, Faults] = {}
    for name in SERVICE_NAMES:
        changes: dict[str, Any] = {}
        try:
            for fault in FAULT_FIELDS:
                for var in (f"FAULT_{fault.upper()}", f"{name.upper()}_FAULT_{fault.upper()}"):
                    if var in env:
                        changes[fault] = _fault_value(fault, env[var])
                flag = getattr(args, f"fault_{fault}")
                if flag is not None:
                    changes[fault] = _fault_value(fault, flag)
            faults[name] = Faults().updated(changes)
        except ValueError as err:
            parser.error(f"{name}: {err}")

    return Config(
        host=args.host,
        ports={n: getattr(args, f"{n}_port") for n in SERVICE_NAMES},
        urls={n: env[f"{n.upper()}_URL"] for n in SERVICE_NAMES if env.get(f"{n.upper()}_URL")},
        seed=args.seed,
        scale=args.scale,
        event_secret=args.event_secret,
        event_webhooks=_split(args.event_webhooks),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        only=only,
        faults=faults,
        recommendations_latency_ms=float(env.get("RECOMMENDATIONS_BASE_LATENCY_MS", "20")),
    )
