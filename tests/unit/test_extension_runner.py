"""The gateway's extension runner (app/execution/runner.py) against Strawberry's own: the same
hooks, in the same order, and the same exception seen by each hook and by the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

from app.execution.runner import FastExtensionsRunner


def extensions(log: list[str], *, swallow: bool = False, replace: bool = False
               ) -> list[SchemaExtension]:
    class First(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            log.append("first in")
            try:
                yield
            except ValueError as error:
                log.append(f"first saw {error}")
                if replace:
                    raise KeyError("replaced") from None
                if not swallow:
                    raise
            finally:
                log.append("first out")

    class Second(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            log.append("second in")
            try:
                yield
            finally:
                log.append("second out")

    class Third(SchemaExtension):
        # A plain hook (called on entry), which Strawberry's runner also takes.
        def on_execute(self) -> None:  # type: ignore[override]
            log.append("third called")

    class Untouched(SchemaExtension):
        def on_parse(self) -> Iterator[None]:
            log.append("never")
            yield

    return [First(), Second(), Third(), Untouched()]


def run(runner_class: type[SchemaExtensionsRunner], fail: bool, **options: Any
        ) -> tuple[list[str], str]:
    log: list[str] = []

    async def go() -> None:
        runner = runner_class(execution_context=None,  # type: ignore[arg-type]
                              extensions=extensions(log, **options))
        async with runner.executing():
            log.append("body")
            if fail:
                raise ValueError("boom")

    try:
        asyncio.run(go())
    except Exception as error:  # the caller's view
        return log, f"{type(error).__name__}: {error}"
    return log, "ok"


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("options", [{}, {"swallow": True}, {"replace": True}])
def test_hooks_run_and_fail_as_with_strawberrys_runner(fail: bool, options: dict[str, Any]
                                                        ) -> None:
    assert run(FastExtensionsRunner, fail, **options) == run(SchemaExtensionsRunner, fail,
                                                             **options)
