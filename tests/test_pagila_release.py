"""A release on a real schema written by others: pagila (datasets/pagila).

plans/examples/pagila-catalogue.yaml renames a column two views read, retypes a column
of a table other tables' foreign keys point at, retypes one under two views, widens one
in place, and adds columns, an index, a check, an enum, a table and a unique constraint.
It expands (both versions' reads and writes work), rolls back to an identical catalog,
expands again, backfills, completes and contracts; the data that was there is intact.

pagila's dump uses pgvector and PostgreSQL 18 (uuidv7(), a VIRTUAL generated column): it
is loaded with the pgvector table and the OWNER statements left out (split by pglast),
and on PostgreSQL 15 with gen_random_uuid() and a STORED generated column instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.plan.loader import load_plan
from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.pagila import load_pagila
from tests.support.servers import Server

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "plans" / "examples" / "pagila-catalogue.yaml"

CHECKSUM = (
    "SELECT (SELECT md5(string_agg(address_id || ':' || {phone} || ':' "
    "|| coalesce(postal_code, '-'), ',' ORDER BY address_id)) FROM address "
    "WHERE address_id <= 40), "
    "(SELECT md5(string_agg(film_id || ':' || rental_duration || ':' || rental_rate, ',' "
    "ORDER BY film_id)) FROM film WHERE film_id <= 30), "
    "(SELECT md5(string_agg(customer_id || ':' || store_id || ':' || email, ',' "
    "ORDER BY customer_id)) FROM customer WHERE customer_id <= 20)"
)


def q(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pagila(server: Server) -> Iterator[str]:
    url = server.create_database("pagila")
    load_pagila(url, server.version)
    yield url
    server.drop_database(url)


OLD_VERSION = [
    'SELECT id, name, address, phone, "zip code" FROM customer_list',
    "SELECT fid, title, price, length FROM film_list",
    "SELECT address_id, phone, postal_code FROM address WHERE address_id = 3",
    "INSERT INTO address (address_id, address, district, city_id, postal_code, phone) "
    "VALUES (101, 'old street', 'd', 1, '10100', '+39 old')",
    "UPDATE address SET phone = '+39 changed by old' WHERE address_id = 4",
    "INSERT INTO film (film_id, title, language_id, rental_duration) VALUES (101, 'Old One', 1, 5)",
    "UPDATE film SET rental_duration = 6 WHERE film_id = 101",
    "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id) "
    "VALUES (101, 1, 'Old', 'Writer', 'old@example.com', 3)",
    "SELECT id, sid FROM customer_list ORDER BY id LIMIT 3",
]

NEW_VERSION = [
    "INSERT INTO address (address_id, address, district, city_id, postal_code, phone_number) "
    "VALUES (201, 'new street', 'd', 2, '20100', '+56 new')",
    "UPDATE address SET phone_number = '+56 changed by new' WHERE address_id = 5",
    "INSERT INTO film (film_id, title, language_id, _migrator_new_rental_duration, slug) "
    "VALUES (201, 'New One', 1, 4, 'new-one')",
    "SELECT slug, loyalty_points FROM film, customer LIMIT 1",
    "INSERT INTO customer (customer_id, _migrator_new_store_id, first_name, last_name, email, "
    "address_id) VALUES (201, 1, 'New', 'Writer', 'new@example.com', 4)",
    "INSERT INTO loyalty_event (id, customer_id, points, tier) SELECT 1, customer_id, 5, "
    "'gold' FROM customer LIMIT 1",
]

SEEN_THROUGH_BOTH = [
    (
        "SELECT address_id, phone, phone_number FROM address "
        "WHERE address_id IN (4, 5, 101, 201) ORDER BY 1",
        [
            (4, "+39 changed by old", "+39 changed by old"),
            (5, "+56 changed by new", "+56 changed by new"),
            (101, "+39 old", "+39 old"),
            (201, "+56 new", "+56 new"),
        ],
    ),
    (
        "SELECT film_id, rental_duration, _migrator_new_rental_duration FROM film "
        "WHERE film_id IN (101, 201) ORDER BY 1",
        [(101, 6, 6), (201, 4, 4)],
    ),
    (
        "SELECT customer_id, store_id, _migrator_new_store_id FROM customer "
        "WHERE customer_id IN (101, 201) ORDER BY 1",
        [(101, 1, 1), (201, 1, 1)],
    ),
]


def test_pagila_release(pagila: str) -> None:
    url = pagila
    plan = load_plan(PLAN)
    assert len(plan.expand) >= 10
    opts = commands.Options(database_url=url, force=True, force_reason="test")
    before = schema_dump(url)
    checksum = q(url, CHECKSUM.format(phone="phone"))

    commands.expand(plan, opts)
    for sql in OLD_VERSION + NEW_VERSION:
        q(url, sql)
    for sql, rows in SEEN_THROUGH_BOTH:
        assert q(url, sql) == rows, sql

    commands.rollback(plan, opts)
    after = schema_dump(url)
    assert after == before, diff(before, after)
    q(url, "DELETE FROM address WHERE address_id > 100")
    q(url, "DELETE FROM film WHERE film_id > 100")
    q(url, "DELETE FROM customer WHERE customer_id > 100")
    q(url, "UPDATE address SET phone = '+39 011 ' || address_id WHERE address_id IN (4, 5)")
    assert q(url, CHECKSUM.format(phone="phone")) == checksum

    commands.expand(plan, opts)
    commands.backfill(plan, opts)
    assert q(url, "SELECT count(*) FROM address WHERE phone_number IS DISTINCT FROM phone") == [
        (0,)
    ]
    assert q(url, "SELECT count(*) FROM film WHERE slug IS NULL") == [(0,)]
    commands.complete(plan, opts)
    commands.contract(opts, plan.release)

    assert q(url, CHECKSUM.format(phone="phone_number")) == checksum
    assert q(
        url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND (table_name, column_name) IN (('address', 'phone'), "
        "('address', 'phone_number'), ('film', 'rental_duration'), ('film', 'rental_rate'), "
        "('customer', 'store_id'), ('film', 'special_features'), ('film', 'slug')) "
        "ORDER BY 1, 2",
    ) == [
        ("address", "phone_number", "text"),
        ("customer", "store_id", "bigint"),
        ("film", "rental_duration", "integer"),
        ("film", "rental_rate", "numeric"),
        ("film", "slug", "text"),
    ]
    # the views over the renamed and retyped columns answer as before
    assert q(url, "SELECT count(*) FROM film_list") == q(url, "SELECT count(*) FROM film")
    assert "phone_number AS phone" in str(q(url, "SELECT pg_get_viewdef('customer_list')"))
    assert q(url, "SELECT count(*) FROM staff_list") == [(1,)]
    assert q(url, "SELECT count(*), sum(sid) FROM customer_list") == [(20, 20)]
    assert q(
        url,
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
        "WHERE conname = 'customer_store_id_fkey'",
    ) == [
        (
            "FOREIGN KEY (store_id) REFERENCES store(store_id) ON UPDATE CASCADE "
            "ON DELETE RESTRICT",
            True,
        )
    ]
    # the foreign keys pointing at film, and everything migrator made for the transition
    assert q(
        url,
        "SELECT count(*) FROM pg_constraint WHERE confrelid = 'film'::regclass AND convalidated",
    ) == [(3,)]
    assert q(
        url,
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND a.attname LIKE '\\_migrator%' "
        # (an index keeps the name its column had when it was built, as after any
        # RENAME COLUMN in PostgreSQL; pg_get_indexdef and pg_dump show the live name)
        "AND c.relkind <> 'i' "
        "AND NOT a.attisdropped",
    ) == [(0,)]
    assert q(url, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\\_migrator%'") == [(0,)]
    assert q(
        url,
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'film'::regclass "
        "AND attname = 'rental_duration'",
    ) == [(True,)]
