-- The example warehouse: the team's stock system of record, in its own database.
-- Its shape is deliberately not the shop's: stock is counted per location, with
-- reserved and damaged units kept apart, and prices are unit costs in cents.

CREATE TABLE items (
    sku             text PRIMARY KEY,
    name            text NOT NULL,
    unit_cost_cents integer NOT NULL CHECK (unit_cost_cents >= 0)
);

CREATE TABLE stock_levels (
    sku      text NOT NULL REFERENCES items (sku),
    location text NOT NULL,
    on_hand  integer NOT NULL CHECK (on_hand >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    damaged  integer NOT NULL DEFAULT 0 CHECK (damaged >= 0),
    PRIMARY KEY (sku, location)
);

-- Returns as the warehouse receives them; event_id is the return event's id.
CREATE TABLE returns (
    event_id    text PRIMARY KEY,
    order_id    text NOT NULL,
    sku         text NOT NULL REFERENCES items (sku),
    quantity    integer NOT NULL CHECK (quantity > 0),
    condition   text NOT NULL CHECK (condition IN ('resellable', 'damaged')),
    received_at timestamptz NOT NULL DEFAULT now()
);
