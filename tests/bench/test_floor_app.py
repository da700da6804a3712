"""bench/floor_app.py does the gateway's HTTP work for the queries it stands in for: its
data is the gateway's, field for field, so that the floors bench.speed measures beside the
gateway are floors of the same work (the same upstream calls, the same answer), with either
client it makes its calls with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.speed import ENV, FLOOR_KINDS, start_floor
from bench.workloads import EXTRA_WORKLOADS, WORKLOADS
from tests.harness import http, running_services, start_gateway

ALL = {**WORKLOADS, **EXTRA_WORKLOADS}


@pytest.mark.parametrize("kind", ["floor", "floor_reqwest"])
def test_the_floor_answers_the_gateways_data(tmp_path: Path, kind: str) -> None:
    with running_services(tmp_path) as services:
        gateway = start_gateway(tmp_path, services, env=ENV)
        floor = start_floor(tmp_path, services, kind)
        try:
            for workload, index in ((w, i) for w in FLOOR_KINDS[kind][2]
                                    for i in (0, 1, 4242)):
                query, variables, headers = ALL[workload].make(index)
                body = {"query": query, "variables": variables}
                services.reset_stats()
                status, _, ours = http("POST", gateway.url + "/graphql", body, headers)
                assert status == 200 and not ours.get("errors"), ours
                calls = services.all_stats()
                services.reset_stats()
                status, _, bare = http("POST", floor.url + "/graphql", body, headers)
                assert status == 200
                assert bare == {"data": ours["data"]}, workload
                assert ours["data"], workload
                # The same upstream requests, route by route, asking for the same ids.
                assert services.all_stats() == calls, workload
        finally:
            floor.process.stop()
            gateway.stop()


def test_the_minimal_graphql_floor_answers_typename_as_the_gateway(tmp_path: Path) -> None:
    with running_services(tmp_path) as services:
        gateway = start_gateway(tmp_path, services, env=ENV)
        floor = start_floor(tmp_path, services, "floor_graphql")
        try:
            body = {"query": ALL["typename"].make(0)[0]}
            answers = [http("POST", where.url + "/graphql", body) for where in (gateway, floor)]
            assert answers[0][0] == answers[1][0] == 200
            assert answers[0][2] == answers[1][2] == {"data": {"__typename": "Query"}}
            # It executed and logged the request (its access line), as the gateway does.
            assert '"path":"/graphql"' in floor.process.log()
        finally:
            floor.process.stop()
            gateway.stop()
