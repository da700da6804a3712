"""Process life: persistence across restarts, fast shutdown, start-time settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness import ROOT, free_port, http, start_services, wait_healthy


def test_writes_survive_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    svc = start_services(tmp_path / "a", scale=0.05, data_dir=data_dir)
    try:
        key = {"Idempotency-Key": "persist-1"}
        body = {"user_id": "u1", "items": [{"product_id": "p2", "quantity": 2}]}
        status, _, order = http("POST", svc.url("orders") + "/orders", body, key)
        assert status == 201
        status, _, cancel_me = http("POST", svc.url("orders") + "/orders", {
            "user_id": "u2", "items": [{"product_id": "p3", "quantity": 1}]},
            {"Idempotency-Key": "persist-2"})
        assert status == 201
        http("POST", svc.url("orders") + f"/orders/{cancel_me['id']}/cancel")
        status, _, patched = http("PATCH", svc.url("catalog") + "/products/p4",
                                  {"name": "Kept"})
        assert status == 200
        status, _, review = http("POST", svc.url("reviews") + "/reviews", {
            "product_id": "p5", "author_id": "u3", "rating": 1, "body": "Bad"})
        assert status == 201
        stock = http("POST", svc.url("inventory") + "/inventory/query",
                     {"skus": ["SKU-00002", "SKU-00003"]})[2]["items"]
        p5 = http("GET", svc.url("catalog") + "/products?ids=p5")[2]["items"][0]
    finally:
        svc.stop()

    svc = start_services(tmp_path / "b", scale=0.05, data_dir=data_dir)
    try:
        orders = http("GET", svc.url("orders") + f"/orders?ids={order['id']},{cancel_me['id']}")
        by_id = {o["id"]: o for o in orders[2]["items"]}
        assert by_id[order["id"]] == order
        assert by_id[cancel_me["id"]]["status"] == "CANCELLED"
        listed = http("GET", svc.url("orders") + "/orders?user_id=u1&first=1")[2]
        assert listed["items"] == [order]
        # The idempotency record survived: the replay answers the same order, no new stock.
        status, _, again = http("POST", svc.url("orders") + "/orders", body, key)
        assert status == 200 and again == order
        assert http("POST", svc.url("inventory") + "/inventory/query",
                    {"skus": ["SKU-00002", "SKU-00003"]})[2]["items"] == stock
        assert http("GET", svc.url("catalog") + "/products?ids=p4")[2]["items"] == [patched]
        assert http("GET", svc.url("catalog") + "/products?ids=p5")[2]["items"] == [p5]
        assert http("GET", svc.url("reviews") + f"/reviews?ids={review['id']}")[2][
            "items"] == [review]
        # Counters survived: new ids do not reuse old ones; versions continue.
        status, _, newer = http("POST", svc.url("orders") + "/orders", {
            "user_id": "u1", "items": [{"product_id": "p2", "quantity": 1}]},
            {"Idempotency-Key": "persist-3"})
        assert status == 201 and int(newer["id"][1:]) > int(cancel_me["id"][1:])
        status, _, newer_review = http("POST", svc.url("reviews") + "/reviews", {
            "product_id": "p5", "author_id": "u3", "rating": 5, "body": "Better"})
        assert int(newer_review["id"][1:]) == int(review["id"][1:]) + 1
    finally:
        svc.stop()


def test_without_data_dir_nothing_persists(tmp_path: Path) -> None:
    ports = {n: free_port() for n in ("users", "catalog", "inventory", "orders", "reviews",
                                      "recommendations")}
    svc = start_services(tmp_path, scale=0.05, ports=ports)
    try:
        http("PATCH", svc.url("catalog") + "/products/p4", {"name": "Gone"})
    finally:
        svc.stop()
    svc = start_services(tmp_path, scale=0.05, ports=ports)
    try:
        assert http("GET", svc.url("catalog") + "/products?ids=p4")[2]["items"][0][
            "name"] != "Gone"
    finally:
        svc.stop()


def test_sigterm_and_sigint_stop_fast_even_with_hanging_requests(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        svc = start_services(tmp_path, scale=0.05,
                             env={"USERS_FAULT_HANG_RATE": "1.0"})
        # A request that hangs (fault injection) must not hold up the shutdown.
        hanging = threading.Thread(target=_swallow, args=(svc.url("users") + "/users/u1",),
                                   daemon=True)
        hanging.start()
        time.sleep(0.2)
        start = time.monotonic()
        svc.process.proc.send_signal(sig)
        svc.process.proc.wait(5)
        assert time.monotonic() - start < 2.0


def _swallow(url: str) -> None:
    try:
        http("GET", url, timeout=5)
    except OSError:
        pass


def test_start_time_faults_and_only_and_flags(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ONLY": "users", "FAULT_LATENCY_MS": "7",
           "USERS_FAULT_ERROR_RATE": "0.25", "SCALE": "0.01", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "only.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "--users-port", str(port), "--seed", "5"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        faults = http("GET", f"http://127.0.0.1:{port}/_faults")[2]
        assert faults["latency_ms"] == 7 and faults["error_rate"] == 0.25
        assert (tmp_path / "only.log").read_text().split()[:2] == [
            "users", f"http://127.0.0.1:{port}"]
        status = 0
        for _ in range(20):  # the error_rate may refuse a few
            status, _, user = http("GET", f"http://127.0.0.1:{port}/users/u10")
            if status == 200:
                break
        assert status == 200 and user["id"] == "u10"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()
