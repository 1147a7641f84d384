-- Sellable = on_hand - reserved - damaged, summed over locations. Against the shop's
-- sample data (examples/shop.py) this gives: MUG-01 38 vs 40 (small), CAP-03 10 vs 7
-- (small), LMP-05 0 vs 3 (costly: escalated), PIN-06 only in the warehouse.
INSERT INTO items (sku, name, unit_cost_cents) VALUES
    ('MUG-01', 'Stoneware mug 350ml', 410),
    ('TEE-02', 'T-shirt, logo, cotton', 720),
    ('CAP-03', 'Cap, canvas', 530),
    ('BAG-04', 'Tote bag, organic cotton', 260),
    ('LMP-05', 'Desk lamp, brass', 3100),
    ('PIN-06', 'Enamel pin', 90);

INSERT INTO stock_levels (sku, location, on_hand, reserved, damaged) VALUES
    ('MUG-01', 'A-01', 30, 2, 0),
    ('MUG-01', 'B-07', 10, 0, 0),
    ('TEE-02', 'A-02', 13, 1, 0),
    ('CAP-03', 'A-03', 11, 0, 1),
    ('BAG-04', 'B-01', 30, 0, 0),
    ('LMP-05', 'C-01', 1, 0, 1),
    ('PIN-06', 'A-09', 200, 0, 0);
