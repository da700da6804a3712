"""The errors of a GraphQL result, given their `extensions.code` in one place: called by the
schema for every error list (parse, validation, execution), so none reaches a client
unclassified, and unexpected exceptions are masked and logged in full."""

from __future__ import annotations

import logging
import re
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

from app.core.errors import GatewayError
from app.upstream.failures import UpstreamError

log = logging.getLogger("gateway.errors")


# Completion failures: a value that does not fit its GraphQL type. Resolvers hand upstream
# values on as they came, so such a value is an upstream answering off-contract.
COMPLETION_ERRORS = ("Cannot return null for non-nullable field", "Expected Iterable")
# graphql-core's hints in validation and coercion messages (`did_you_mean`): " Did you mean
# 'email'?", " Did you mean the enum value 'A' or 'B'?". The names they suggest are the
# schema's (types, fields, arguments, enum values), so with introspection off they are
# removed: otherwise a caller could map the schema by guessing near names.
SUGGESTION = re.compile(r" Did you mean [^?]*\?")


def _off_contract(error: GraphQLError) -> bool:
    original = error.original_error
    if isinstance(original, GraphQLError):  # a scalar's serialize() refused the value
        return True
    return isinstance(original, TypeError) and str(original).startswith(COMPLETION_ERRORS)


def _classify(error: GraphQLError) -> tuple[str, dict[str, Any], bool]:
    """Return (code, extra extensions, whether the message must be masked)."""
    original = error.original_error
    if isinstance(original, GatewayError):
        return original.code, original.extensions, False
    if isinstance(error, GraphQLSyntaxError) or isinstance(original, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED", {}, False
    if error.path is None:
        # A request error raised by graphql-core before any resolver ran: the variables did
        # not coerce to their declared types, or the document failed validation.
        if error.message.startswith("Variable '$"):
            return "BAD_USER_INPUT", {}, False
        if original is None:
            return "GRAPHQL_VALIDATION_FAILED", {}, False
    elif _off_contract(error):
        log.warning("off-contract upstream value at %s: %s", error.path, error.message)
        return "UPSTREAM_BAD_RESPONSE", {"retryable": False}, False
    # Anything else under a field is ours: a resolver's exception. Masked, and logged in full.
    return "INTERNAL_SERVER_ERROR", {}, True


def classify_errors(errors: list[GraphQLError], *, hide_suggestions: bool = False) -> None:
    """Give every error an `extensions.code`; mask unexpected exceptions and log them; and
    report a failed upstream call once, with the paths of every field it failed. With
    `hide_suggestions` (introspection off), strip graphql-core's "Did you mean ...?" hints.

    Called by the schema for every list of errors on every path (parse, validation,
    execution), so no error reaches a client unclassified; edits the list in place.
    Idempotent: Strawberry may hand the same list over twice.
    """
    by_failure: dict[int, GraphQLError] = {}
    kept: list[GraphQLError] = []
    for error in errors:
        original = error.original_error
        if isinstance(original, UpstreamError) and error.path is not None:
            # One batch (or one call) failing many fields is one error with many paths.
            first = by_failure.get(id(original))
            if first is not None:
                # (`first` was given extensions with "paths" below, when it was kept.)
                first.extensions["paths"].append(error.path)  # type: ignore[index]  # not None
                continue
            by_failure[id(original)] = error
        kept.append(error)
        if hide_suggestions and " Did you mean " in error.message:
            error.message = SUGGESTION.sub("", error.message)
        if error.extensions and "code" in error.extensions:
            continue
        code, extra, mask = _classify(error)
        if mask:
            log.error("unexpected error at %s", error.path, exc_info=error.original_error,
                      extra={"code": code})
            error.message = "Internal server error"
        error.extensions = {**(error.extensions or {}), **extra, "code": code}
        if not mask:
            # Upstream failures are the operator's news; a client's own mistakes are not.
            fields: dict[str, Any] = {"code": code,
                                      "path": ".".join(map(str, error.path or ())) or None}
            level = logging.INFO
            if isinstance(original, UpstreamError):
                level = logging.WARNING
                fields.update(service=original.service,
                              retries=original.extensions.get("retries"))
            log.log(level, "graphql error: %s", error.message, extra=fields)
        if id(original) in by_failure:
            error.extensions["paths"] = [error.path]
    errors[:] = kept
