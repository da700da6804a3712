"""``python -m services``: the six reference services in one process, one uvicorn server per
service on its own port, all in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Generator, Sequence

import aiohttp
import uvicorn

from services.app import build
from services.config import Config, parse
from services.context import Context
from services.events import Emitter
from services.seed import generate
from services.store import Store


class Server(uvicorn.Server):
    """Signals are handled once for all servers (uvicorn's own handler would only stop the
    last server that installed it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def run(config: Config) -> None:
    dataset = generate(config.seed, config.scale)
    stopping = asyncio.Event()
    # No connection limit: hanging requests (fault injection) must not starve the others.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    emitter = Emitter(session, config.event_webhooks, config.event_secret)
    servers: list[Server] = []
    stores: list[Store] = []
    for name in config.only:
        path = config.data_dir / f"{name}.sqlite3" if config.data_dir else None
        store = Store(path)
        stores.append(store)
        ctx = Context(name=name, config=config, dataset=dataset, store=store, emitter=emitter,
                      session=session)
        app, _ = build(ctx, stopping)
        servers.append(Server(uvicorn.Config(
            app, host=config.host, port=config.ports[name], loop="uvloop", http="httptools",
            lifespan="off", access_log=False, log_level="warning",
            timeout_graceful_shutdown=1,
            # Like nginx's default: clients' pooled connections outlive their idle pauses.
            timeout_keep_alive=75,
        )))
        print(f"{name:<16} {config.url(name)}", flush=True)

    # The seed is tens of thousands of long-lived dicts: keep them out of the collector's
    # full passes, which would otherwise add pauses under load.
    gc.collect()
    gc.freeze()

    def stop() -> None:
        stopping.set()
        for server in servers:
            if server.should_exit:
                server.force_exit = True  # a second signal: stop without waiting
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        results = await asyncio.gather(*(s.serve() for s in servers), return_exceptions=True)
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException) or not server.started:
                stop()  # e.g. a port in use: do not keep half the services running
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed or not all(s.started for s in servers):
            raise SystemExit(1)
    finally:
        await emitter.close()
        await session.close()
        for store in stores:
            store.close()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = parse(argv)
    try:
        import uvloop

        uvloop.run(run(config))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
