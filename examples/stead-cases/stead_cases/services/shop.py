"""The example shop API: the storefront's view of the catalogue and its stock.

Products come in the shop's own shape (nested ``price`` and ``inventory``), which
is not the warehouse's; the connectors in ``stead_cases/commerce.py`` normalise both.
``POST /v1/products/<sku>/inventory-adjustments`` changes the sellable stock, once
per ``Idempotency-Key`` (a replay returns the first answer and changes nothing).

``rename_field("inventory.available", "inventory.in_stock")`` simulates the thing that
broke the team's old scripts: the shop changed its product metadata. The connector
must say so, naming the field, instead of reading a missing value as zero.

Run it alone with ``python -m stead_cases.services.shop --port 8602``.
"""

from __future__ import annotations

import argparse
import copy
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from stead_cases.services._http import Request, Response, error, run_forever

# Storefront stock as the shop believes it; warehouse/seed.sql holds the truth.
SAMPLE_PRODUCTS: list[dict[str, Any]] = [
    {
        "sku": "MUG-01",
        "title": "Stoneware mug",
        "price": {"amount": "14.00", "currency": "EUR"},
        "inventory": {"available": 40},
    },
    {
        "sku": "TEE-02",
        "title": "Logo T-shirt",
        "price": {"amount": "25.00", "currency": "EUR"},
        "inventory": {"available": 12},
    },
    {
        "sku": "CAP-03",
        "title": "Canvas cap",
        "price": {"amount": "18.00", "currency": "EUR"},
        "inventory": {"available": 7},
    },
    {
        "sku": "BAG-04",
        "title": "Tote bag",
        "price": {"amount": "9.50", "currency": "EUR"},
        "inventory": {"available": 30},
    },
    {
        "sku": "LMP-05",
        "title": "Desk lamp",
        "price": {"amount": "89.00", "currency": "EUR"},
        "inventory": {"available": 3},
    },
]


@dataclass
class ShopService:
    """The shop's state; thread-safe, inspected directly by tests."""

    products: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(SAMPLE_PRODUCTS))
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    stock_path: str = "inventory.available"
    _answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stall: threading.Event | None = None
    _held: threading.Event | None = None
    _stalled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stock(self, sku: str) -> int:
        with self._lock:
            product = self._find(sku)
            assert product is not None, sku
            return int(_get(product, self.stock_path))

    def rename_field(self, old: str, new: str) -> None:
        """Move ``old`` (a dotted path) to ``new`` in every product, like an API version bump."""
        with self._lock:
            for product in self.products:
                _set(product, new, _pop(product, old))
            if self.stock_path == old:
                self.stock_path = new

    def stall_next(self) -> threading.Event:
        """Hold the next adjustment after its effect; the event is set once it is held."""
        with self._lock:
            self._stall = threading.Event()
            self._stalled.clear()
            return self._stalled

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.set()

    def route(self, request: Request) -> Response:
        parts = [unquote(p) for p in request.path.split("?", 1)[0].strip("/").split("/")]
        if request.method == "GET" and parts == ["v1", "products"]:
            with self._lock:
                return Response(200, {"products": copy.deepcopy(self.products)})
        if (
            request.method == "POST"
            and len(parts) == 4
            and parts[:2] == ["v1", "products"]
            and parts[3] == "inventory-adjustments"
        ):
            return self.adjust(parts[2], request.headers.get("idempotency-key"), request.body)
        return error(404, f"no route {request.method} {request.path}")

    def adjust(self, sku: str, key: str | None, body: Any) -> Response:
        if not key:
            return error(400, "Idempotency-Key header is required")
        if not isinstance(body, dict) or not isinstance(body.get("delta"), int):
            return error(422, 'expected {"delta": <integer>, "reason": <text>}')
        with self._lock:
            self.requests += 1
            if key in self._answers:
                return Response(200, self._answers[key], {"Idempotent-Replayed": "true"})
            product = self._find(sku)
            if product is None:
                return error(404, f"no product {sku}")
            path = self.stock_path
            new = int(_get(product, path)) + body["delta"]
            if new < 0:
                return error(409, f"{sku} would go below zero ({new})")
            _set(product, path, new)
            answer = {
                "adjustment_id": f"adj_{len(self.adjustments) + 1}",
                "sku": sku,
                "delta": body["delta"],
                "available": new,
                "reason": str(body.get("reason", "")),
            }
            self.adjustments.append({**answer, "idempotency_key": key})
            self._answers[key] = answer
            stall, self._stall = self._stall, None
            self._held = stall or self._held
        if stall is not None:
            self._stalled.set()
            stall.wait(timeout=120)
        return Response(201, answer)

    def _find(self, sku: str) -> dict[str, Any] | None:
        return next((p for p in self.products if p["sku"] == sku), None)


def _get(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _pop(obj: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj[part]
    return obj.pop(last)


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8602)
    run_forever(ShopService(), parser.parse_args().port, "shop")


if __name__ == "__main__":
    main()
