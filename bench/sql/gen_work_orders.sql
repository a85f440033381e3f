-- Fill work_orders with :n deterministic pseudo-random JDE-like rows (run in database src).
-- Usage: psql -d src -v n=1000000 -f bench/sql/gen_work_orders.sql (bench/run.py does this)
\set ON_ERROR_STOP on
\ir work_orders_ddl.sql
SELECT setseed(0.42);
INSERT INTO work_orders
SELECT g,
       (ARRAY['WO','WM','WR','WP','WN'])[1 + (g % 5)],
       lpad('M' || (10 + (g % 40))::text, 12, ' '),                      -- JDE MCU: right-justified
       'IT-' || lpad(((g * 7919) % 50000)::text, 6, '0') || '-' || chr(65 + (g % 26)::int),
       (ARRAY['HEAVY DUTY','STANDARD','PRECISION','COATED','MACHINED','FORGED','WELDED','SPARE'])[1 + floor(r1 * 8)::int]
         || ' ' || (ARRAY['STEEL','BRASS','ALUMINUM','PVC','COPPER','NYLON','CAST IRON'])[1 + floor(r2 * 7)::int]
         || ' ' || (ARRAY['BRACKET','VALVE','HOUSING','FLANGE','GASKET','SHAFT','BEARING','BUSHING','COUPLING'])[1 + floor(r3 * 9)::int]
         || ' ' || (5 * (1 + floor(r4 * 40)::int))::text || 'MM',
       round((r5 * 1000)::numeric, 4),
       round((r5 * r6 * 1000)::numeric, 4),
       round((r7 * 500)::numeric, 4),
       (ARRAY['10','20','30','40','45','90','99'])[1 + floor(r8 * 7)::int],
       (1 + floor(r9 * 5))::smallint,
       req,
       req - floor(r10 * 30)::int,
       CASE WHEN r11 < 0.4 THEN NULL ELSE req + floor(r11 * 60)::int END,
       created,
       created + r12 * interval '400 days',
       1000 + floor(r13 * 500)::int,
       CASE WHEN r14 < 0.25 THEN NULL ELSE 'LOT' || to_char(req, 'YYMMDD') || '-' || lpad((g % 1000)::text, 4, '0') END,
       r15 < 0.8,
       CASE WHEN r16 < 0.7 THEN NULL
            ELSE (ARRAY['Rework required after QA inspection, see NCR',
                        'Expedite: customer line down',
                        'Material substituted per engineering change notice',
                        'Partial completion, remainder backordered',
                        'Closed by MRP regeneration'])[1 + floor(r17 * 5)::int]
                 || ' #' || (g % 9973)::text END,
       1 + (g % 12)
FROM (SELECT g, random() r1, random() r2, random() r3, random() r4, random() r5, random() r6,
             random() r7, random() r8, random() r9, random() r10, random() r11, random() r12,
             random() r13, random() r14, random() r15, random() r16, random() r17,
             date '2018-01-01' + floor(random() * 2500)::int AS req,
             timestamp '2018-01-01' + random() * interval '2500 days' AS created
      FROM generate_series(1::bigint, :n) g) s;
CREATE INDEX work_orders_last_update_dt_idx ON work_orders (last_update_dt);
VACUUM ANALYZE work_orders;
