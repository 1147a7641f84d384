"""Commerce operations: two connectors, a reconciliation, and the fix.

The shop API and the warehouse database describe the same products in different
shapes. The connectors (``shop.products``, ``warehouse.stock``) turn each into one
normalised record, and they fail loudly when the source changed under them: a field
that is missing or renamed stops the step with a non-retryable error naming the
field and the mapping to change. Reading a missing value as zero is exactly how the
old scripts "fixed" stock that was never wrong.

``commerce.reconcile`` is pure: it pairs the two by SKU and splits the mismatches by
the auto-fix limits it is given into ``small`` and ``large``. That split only routes
work; the authority is policy (``policies/stead/commerce.rego``), which checks every
adjustment of every ``shop.adjust_stock`` step against the tenant's limits in OPA data
and holds the step for a human when any is over. Stale limits therefore escalate
more, never less. Given earlier findings from memory (``memory.history``), it also
names the SKUs that were mismatched last time too, and the playbook remembers this
run's findings (``memory.remember`` with ``data``) for the next one. Given the earlier runs'
mismatch points per SKU (``memory.series``), it also says whether each mismatch is a
first, a repeat or a trend (``stead_cases/commerce_trend.py``).

``shop.adjust_stock`` sends one adjustment per SKU under an ``Idempotency-Key``
derived from the step's, so a retry or a dead worker never adjusts twice.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

import asyncpg
from pydantic import Field, JsonValue, field_validator

from adapters.http import HttpRequestArgs
from adapters.http import request as http_request
from adapters.memory import HistoryItem, PointArgs, SeriesOpPoint
from stead.contracts.base import Closed
from stead.egress import url_destination
from stead.operations.base import AdapterError, Operation, OperationContext
from stead_cases.commerce_trend import SkuTrend, sku_observations, sku_trends
from stead_cases.content import http_url

SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MISSING_COLUMN = re.compile(r'column "?(?:[a-z_]+\.)?([a-z0-9_]+)"? does not exist')


class SchemaDrift(AdapterError):
    """A source no longer has a field the mapping names: fix the mapping, do not retry."""

    def __init__(self, message: str, *, source: str, field: str) -> None:
        super().__init__(
            message,
            retryable=False,
            details={"reason": "schema_drift", "source": source, "field": field},
        )


# ------------------------------------------------------------------- shop


class ShopFields(Closed):
    """Where each normalised field sits in the shop's product JSON (dotted paths)."""

    sku: str = "sku"
    title: str = "title"
    price: str = "price.amount"
    currency: str = "price.currency"
    available: str = "inventory.available"


class ShopProductsArgs(Closed):
    base_url: str = Field(description="The shop API, e.g. http://127.0.0.1:8602.")
    skus: list[str] = Field(default_factory=list, max_length=500, description="Empty: all.")
    fields: ShopFields = ShopFields()

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return http_url(value)


class Product(Closed):
    """A product as both sources are compared: the shop's view of it."""

    sku: str
    title: str
    unit_price: float
    currency: str
    available: int


class ShopProductsResult(Closed):
    products: list[Product]


async def shop_products(ctx: OperationContext, args: ShopProductsArgs) -> ShopProductsResult:
    response = await http_request(
        ctx,
        HttpRequestArgs.model_validate(
            {"method": "GET", "url": f"{args.base_url}/v1/products", "timeout_seconds": 20}
        ),
    )
    body = response.json_body
    raw = body.get("products") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise SchemaDrift(
            f"the shop at {args.base_url} answered without a products list; its API changed",
            source="shop",
            field="products",
        )
    wanted = set(args.skus)
    products = []
    for item in raw:
        product = _normalise(item, args.fields)
        if not wanted or product.sku in wanted:
            products.append(product)
    return ShopProductsResult(products=products)


def _normalise(item: Any, fields: ShopFields) -> Product:
    sku = _field(item, fields.sku, "<unknown>", str)
    return Product(
        sku=sku,
        title=_field(item, fields.title, sku, str),
        unit_price=_field(item, fields.price, sku, float),
        currency=_field(item, fields.currency, sku, str),
        available=_field(item, fields.available, sku, int),
    )


def _field(item: Any, path: str, sku: str, kind: type[Any]) -> Any:
    value = item
    for i, part in enumerate(path.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(path.split(".")[:i]) or "the product"
            have = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise SchemaDrift(
                f"shop product {sku} has no field {path!r} ({where} has: {have}); the shop's "
                "product data changed. Map the new name in the step's fields (playbook input "
                'shop_fields), e.g. {"available": "inventory.<new name>"}',
                source="shop",
                field=path,
            )
        value = value[part]
    try:
        if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise SchemaDrift(
            f"shop product {sku} field {path!r} is {value!r}, not a {kind.__name__}",
            source="shop",
            field=path,
        ) from None


# -------------------------------------------------------------- warehouse


class WarehouseColumns(Closed):
    """Column names in the warehouse's ``stock_levels`` table."""

    on_hand: str = "on_hand"
    reserved: str = "reserved"
    damaged: str = "damaged"

    @field_validator("on_hand", "reserved", "damaged")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"{value!r} is not a plain lowercase SQL column name")
        return value


class WarehouseStockArgs(Closed):
    database: str = Field(default="warehouse", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    skus: list[str] = Field(default_factory=list, max_length=500, description="Empty: all.")
    columns: WarehouseColumns = WarehouseColumns()


class StockItem(Closed):
    sku: str
    name: str
    sellable: int = Field(description="on_hand - reserved - damaged over all locations.")
    unit_cost: float


class WarehouseStockResult(Closed):
    items: list[StockItem]


async def warehouse_stock(ctx: OperationContext, args: WarehouseStockArgs) -> WarehouseStockResult:
    """Read-only, through the tenant's configured database (STEAD_SQL_DATABASES)."""
    from adapters.sql import SqlDatabases

    databases = getattr(ctx.resources, "sql", None)
    if not isinstance(databases, SqlDatabases):
        raise AdapterError(
            "warehouse.stock needs the worker's SQL databases (AdapterResources.sql)",
            retryable=False,
            details={"reason": "no_sql"},
        )
    pool = await databases.pool(ctx, args.database)
    c = args.columns
    sql = (
        f"SELECT i.sku, i.name, i.unit_cost_cents,"
        f" sum(s.{c.on_hand} - s.{c.reserved} - s.{c.damaged})::int AS sellable"
        " FROM items i JOIN stock_levels s ON s.sku = i.sku"
        " WHERE cardinality($1::text[]) = 0 OR i.sku = ANY($1::text[])"
        " GROUP BY i.sku, i.name, i.unit_cost_cents ORDER BY i.sku"
    )
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            rows = await conn.fetch(sql, args.skus)
    except asyncpg.UndefinedColumnError as exc:
        match = _MISSING_COLUMN.search(str(exc))
        column = match.group(1) if match else "?"
        name = next((k for k, v in c.model_dump().items() if v == column), column)
        raise SchemaDrift(
            f"warehouse database {args.database} has no column stock_levels.{column}; the "
            "warehouse schema changed. Map the new name in the step's columns (playbook input "
            f'warehouse_columns), e.g. {{"{name}": "<new name>"}}',
            source="warehouse",
            field=f"stock_levels.{column}",
        ) from None
    except asyncpg.UndefinedTableError as exc:
        raise SchemaDrift(
            f"warehouse database {args.database}: {exc}; the warehouse schema changed",
            source="warehouse",
            field=str(exc),
        ) from None
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
        raise AdapterError(
            f"warehouse database {args.database} is unreachable ({type(exc).__name__}); "
            "Temporal retries",
            retryable=True,
            details={"reason": type(exc).__name__},
        ) from None
    return WarehouseStockResult(
        items=[
            StockItem(
                sku=r["sku"],
                name=r["name"],
                sellable=int(r["sellable"]),
                unit_cost=r["unit_cost_cents"] / 100,
            )
            for r in rows
        ]
    )


# -------------------------------------------------------------- reconcile


class Adjustment(Closed):
    """Set the shop's stock of ``sku`` to the warehouse's by adding ``delta``."""

    sku: str = Field(pattern=SKU)
    title: str = ""
    delta: int
    shop: int = Field(description="What the shop showed.")
    warehouse: int = Field(description="What the warehouse can sell.")
    unit_value: float = Field(ge=0, description="The shop's unit price: what a wrong unit costs.")
    value: float = Field(ge=0, description="abs(delta) * unit_value.")


class Unmatched(Closed):
    sku: str
    only_in: Literal["shop", "warehouse"]


class ReconcileArgs(Closed):
    shop: list[Product] = Field(max_length=5_000)
    warehouse: list[StockItem] = Field(max_length=5_000)
    auto_units: int = Field(ge=0, description="Route to `small` at most this many units...")
    auto_value: float = Field(ge=0, description="...and at most this much value; policy decides.")
    trigger: dict[str, JsonValue] = Field(default_factory=dict, description="Why this ran.")
    history: list[HistoryItem] = Field(
        default_factory=list,
        max_length=10,
        description="Earlier findings from memory (memory.history), oldest first.",
    )
    trend: list[SeriesOpPoint] = Field(
        default_factory=list,
        max_length=10_000,
        description="Earlier runs' mismatch points by SKU (memory.series, by: sku).",
    )
    trend_at: int = Field(default=3, ge=2, description="Mismatched this often is a trend.")


class PreviousRun(Closed):
    """The latest remembered reconciliation: which memory version, written by which run."""

    version: int
    workflow_id: str | None
    recorded_at: str
    mismatched: list[str] = Field(description="SKUs it found mismatched (fixed or escalated).")


class ReconcileResult(Closed):
    checked: int
    matched: int
    small: list[Adjustment]
    large: list[Adjustment]
    unmatched: list[Unmatched]
    previous: PreviousRun | None = Field(default=None, description="What memory recalled.")
    recurring: list[str] = Field(
        default_factory=list, description="Mismatched now and in the previous reconciliation."
    )
    trends: list[SkuTrend] = Field(
        default_factory=list, description="Per SKU mismatched now: first, again or a trend."
    )
    observations: list[PointArgs] = Field(
        default_factory=list, description="This run's points per SKU, for memory.observe_many."
    )
    summary: str = Field(description="The findings as text, for review and memory.")


async def reconcile(ctx: OperationContext, args: ReconcileArgs) -> ReconcileResult:
    shop = {p.sku: p for p in args.shop}
    stock = {s.sku: s for s in args.warehouse}
    small: list[Adjustment] = []
    large: list[Adjustment] = []
    matched = 0
    for sku in sorted(shop.keys() & stock.keys()):
        product, item = shop[sku], stock[sku]
        delta = item.sellable - product.available
        if delta == 0:
            matched += 1
            continue
        adjustment = Adjustment(
            sku=sku,
            title=product.title,
            delta=delta,
            shop=product.available,
            warehouse=item.sellable,
            unit_value=product.unit_price,
            value=round(abs(delta) * product.unit_price, 2),
        )
        fits = abs(delta) <= args.auto_units and adjustment.value <= args.auto_value
        (small if fits else large).append(adjustment)
    unmatched = [Unmatched(sku=s, only_in="shop") for s in sorted(shop.keys() - stock.keys())]
    unmatched += [Unmatched(sku=s, only_in="warehouse") for s in sorted(stock.keys() - shop.keys())]
    previous = _previous(args.history)
    now = {a.sku for a in (*small, *large)}
    recurring = sorted(now & set(previous.mismatched)) if previous else []
    trends = sku_trends(args.trend, now, trend_at=args.trend_at)
    summary = _summary(args, matched, small, large, unmatched)
    summary += "".join(f"\n- {t.text}" for t in trends)
    if previous is not None:
        summary += (
            f"\nPrevious reconciliation (memory v{previous.version}, run "
            f"{previous.workflow_id or 'unknown'}): {len(previous.mismatched)} mismatched"
            + (f"; mismatched again: {', '.join(recurring)}." if recurring else "; none again.")
        )
    return ReconcileResult(
        checked=len(shop.keys() | stock.keys()),
        matched=matched,
        small=small,
        large=large,
        unmatched=unmatched,
        previous=previous,
        recurring=recurring,
        trends=trends,
        observations=sku_observations(
            {sku: stock[sku].sellable for sku in shop.keys() & stock.keys()}, now
        ),
        summary=summary,
    )


def _previous(history: list[HistoryItem]) -> PreviousRun | None:
    """The newest remembered findings (the ``data`` the playbook's remember step wrote)."""
    if not history:
        return None
    last = history[-1]
    data = last.data if isinstance(last.data, dict) else {}
    skus: set[str] = set()
    for label in ("auto_fix", "escalated"):
        batch = data.get(label)
        for item in batch if isinstance(batch, list) else []:
            sku = item.get("sku") if isinstance(item, dict) else None
            if isinstance(sku, str):
                skus.add(sku)
    return PreviousRun(
        version=last.version,
        workflow_id=last.workflow_id,
        recorded_at=last.recorded_at,
        mismatched=sorted(skus),
    )


def _summary(
    args: ReconcileArgs,
    matched: int,
    small: list[Adjustment],
    large: list[Adjustment],
    unmatched: list[Unmatched],
) -> str:
    trigger = ", ".join(f"{k}={v}" for k, v in sorted(args.trigger.items())) or "manual"
    lines = [
        f"Reconciliation ({trigger}): {matched} in step, {len(small) + len(large)} mismatched, "
        f"{len(unmatched)} in one source only. Limits: {args.auto_units} units, "
        f"{args.auto_value:g} value."
    ]
    for label, batch in (("auto-fix", small), ("escalated to review", large)):
        for a in batch:
            lines.append(
                f"- {label}: {a.sku} shop {a.shop} -> warehouse {a.warehouse} "
                f"({a.delta:+d} units, value {a.value:g})"
            )
    lines += [f"- only in the {u.only_in}: {u.sku} (not adjusted)" for u in unmatched]
    return "\n".join(lines)


# ----------------------------------------------------------------- adjust


class AdjustArgs(Closed):
    base_url: str = Field(description="The shop API.")
    adjustments: list[Adjustment] = Field(max_length=200)
    reason: str = Field(default="reconciliation", max_length=200)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return http_url(value)


class Applied(Closed):
    sku: str
    delta: int
    available: int
    adjustment_id: str
    replayed: bool


class AdjustResult(Closed):
    applied: list[Applied]


async def adjust_stock(ctx: OperationContext, args: AdjustArgs) -> AdjustResult:
    """One POST per SKU under ``<step key>/<sku>``: a retry replays what landed."""
    applied = []
    for a in args.adjustments:
        response = await http_request(
            dataclasses.replace(ctx, idempotency_key=f"{ctx.idempotency_key}/{a.sku}"),
            HttpRequestArgs.model_validate(
                {
                    "method": "POST",
                    "url": f"{args.base_url}/v1/products/{a.sku}/inventory-adjustments",
                    "json": {"delta": a.delta, "reason": args.reason},
                    "timeout_seconds": 20,
                }
            ),
        )
        body = response.json_body
        if not isinstance(body, dict) or not isinstance(body.get("available"), int):
            raise AdapterError(
                f"the shop answered {response.status} for {a.sku} without the new stock",
                retryable=False,
                details={"reason": "bad_answer", "sku": a.sku},
            )
        applied.append(
            Applied(
                sku=a.sku,
                delta=a.delta,
                available=body["available"],
                adjustment_id=str(body.get("adjustment_id", "")),
                replayed=response.headers.get("idempotent-replayed") == "true",
            )
        )
    return AdjustResult(applied=applied)


async def _resend(ctx: OperationContext, args: AdjustArgs) -> AdjustResult | None:
    """Re-sending with the same keys is the reconcile: the shop replays what landed."""
    return None


SHOP_PRODUCTS: Operation[ShopProductsArgs, ShopProductsResult] = Operation(
    name="shop.products",
    description=(
        "Read the shop's products, normalised to {sku, title, unit_price, currency, "
        "available}; a missing or renamed field fails the step naming it."
    ),
    args_model=ShopProductsArgs,
    result_model=ShopProductsResult,
    run=shop_products,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("shop:read",),
    timeout_seconds=30.0,
    destinations=lambda args: [url_destination(args.base_url)],
)

WAREHOUSE_STOCK: Operation[WarehouseStockArgs, WarehouseStockResult] = Operation(
    name="warehouse.stock",
    description=(
        "Read sellable stock per SKU from the warehouse database (read-only), normalised to "
        "{sku, name, sellable, unit_cost}; a renamed column fails the step naming it."
    ),
    args_model=WarehouseStockArgs,
    result_model=WarehouseStockResult,
    run=warehouse_stock,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("warehouse:read",),
    timeout_seconds=30.0,
)

COMMERCE_RECONCILE: Operation[ReconcileArgs, ReconcileResult] = Operation(
    name="commerce.reconcile",
    description=(
        "Compare shop and warehouse stock by SKU; split mismatches into small (within the "
        "given auto-fix limits) and large, and list SKUs found in one source only."
    ),
    args_model=ReconcileArgs,
    result_model=ReconcileResult,
    run=reconcile,
    side_effect="read",
    scopes=("commerce:reconcile",),
    risk="low",
    idempotency="native",
    timeout_seconds=30.0,
)

SHOP_ADJUST_STOCK: Operation[AdjustArgs, AdjustResult] = Operation(
    name="shop.adjust_stock",
    description=(
        "Adjust the shop's sellable stock by each adjustment's delta, once per SKU per step "
        "(Idempotency-Key). Policy holds adjustments over the tenant's limits for a human."
    ),
    args_model=AdjustArgs,
    result_model=AdjustResult,
    run=adjust_stock,
    side_effect="external",
    risk="medium",
    idempotency="key",
    scopes=("shop:write",),
    timeout_seconds=60.0,
    max_attempts=6,
    rate_limit_per_minute=120,
    reconcile=_resend,
    destinations=lambda args: [url_destination(args.base_url)],
)

COMMERCE_OPERATIONS: tuple[Operation[Any, Any], ...] = (
    SHOP_PRODUCTS,
    WAREHOUSE_STOCK,
    COMMERCE_RECONCILE,
    SHOP_ADJUST_STOCK,
)
