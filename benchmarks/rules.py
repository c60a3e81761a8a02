"""Rules engine and what-if simulation throughput, each beside a baseline measured in the same run.

    .venv/bin/python benchmarks/rules.py [--activities 1000000] [--db sqlite|postgresql|both]
                                         [--seconds 3] [--skip-evaluate] [--json FILE]
                                         [--programs simple,50_rules,cafe,grocery,fashion]
                                         [--workers N]

a) `engine.evaluate` in memory: a realistic 50-rule program (PROGRAM_50 below) on random
   baskets of 10 lines, with rule counters kept in dicts as a replay keeps them. Baselines:
   building the ActivityFacts of the same baskets from decoded bodies, and evaluating a
   one-rule program (1 point per krone) on them. Prints evaluations/s and the ratios.
b) `analytics.simulate.simulate` over N stored activities (default 1,000,000: purchases of
   10 lines, events, returns) written straight into the real schema (migrations) of a
   temporary SQLite file and/or a throwaway PostgreSQL server (tests/pgserver.py) with
   executemany / COPY. Times the replay under a simple program (base rate and a couple of
   conditions) and under PROGRAM_50, and, as baselines in the same run, the bare read of the
   same rows: the raw DB-API cursor loop, the same with the JSON bodies decoded, and the read
   loop the simulation itself runs. Prints time, activities/s, and the share of the replay
   that reading the rows accounts for. Then the real programs (`real_profiles()`): the demo
   café, examples/grocery.yaml and examples/fashion-eshop.yaml, each replayed over a
   history generated for it in a database of its own, with the products, categories,
   stores, channels, member tags and event types its rules match. Each program without a
   rule budget is also replayed with its members shared between --workers processes
   (default: one per core), whose results must be the same: that row is wall time.

--json writes every figure and a digest of the results (points per month, per program) so
that two runs, e.g. before and after a change to the engine, can be compared for identical
results. Machines are noisy (±20 %): compare ratios, and absolute figures only within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from trofast import demo, migrations
from trofast.analytics import repository
from trofast.analytics.simulate import decode_body, parallel, simulate
from trofast.kit.db import connect
from trofast.programs import service as programs
from trofast.programs.spec import ProgramSpec, parse_document
from trofast.rules import engine
from trofast.rules.replay import points as replay_points

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pgserver

SEED = 20260501
ZONE = "Europe/Stockholm"
START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=365)

# --- the catalogue and the baskets ------------------------------------------------------------

#: category -> (share of basket lines, price range in öre)
CATEGORIES: dict[str, tuple[int, tuple[int, int]]] = {
    "fruit-veg": (14, (900, 4_900)),
    "dairy": (12, (1_200, 3_900)),
    "bakery": (8, (1_500, 5_500)),
    "meat": (7, (4_900, 18_900)),
    "fish": (3, (5_900, 21_900)),
    "frozen": (6, (2_500, 8_900)),
    "dry-goods": (12, (1_000, 4_900)),
    "snacks": (7, (1_200, 3_900)),
    "beverages": (8, (900, 4_500)),
    "coffee": (5, (3_900, 11_900)),
    "household": (6, (1_900, 9_900)),
    "hygiene": (5, (1_900, 8_900)),
    "tobacco": (2, (6_000, 12_000)),
    "deposit": (3, (100, 300)),
    "gift-cards": (1, (10_000, 50_000)),
    "pharmacy": (1, (2_900, 14_900)),
}
LABELS = ("organic", "local", "eco", "new", "fairtrade", "vegan")
STORES = tuple(f"store-{n:02d}" for n in range(1, 21))
CHANNELS = ("store",) * 14 + ("app",) * 3 + ("online",) * 2 + ("partner",)
EVENTS = ("store_visit",) * 5 + ("review", "social_share", "survey_answered", "app_login", "quiz")
SKUS_PER_CATEGORY = 40


def catalogue(
    rng: random.Random, categories: dict[str, tuple[int, tuple[int, int]]] | None = None
) -> list[dict[str, Any]]:
    """SKUs with a category, a unit price and zero to two labels."""
    items = []
    for category, (share, (low, high)) in (categories or CATEGORIES).items():
        for n in range(SKUS_PER_CATEGORY):
            labels = sorted(rng.sample(LABELS, k=rng.choice((0, 0, 0, 1, 1, 2))))
            items.append(
                {"sku": f"{category[:4]}-{n:03d}", "category": category,
                 "price": rng.randint(low, high), "labels": labels, "share": share}
            )  # fmt: skip
    return items


def basket_lines(
    rng: random.Random, items: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """`count` lines as a till sends them (the stored body's `lines`)."""
    weights = [item["share"] for item in items]
    lines = []
    for item in rng.choices(items, weights, k=count):
        quantity = rng.choice((1, 1, 1, 1, 2, 2, 3))
        lines.append(
            {"sku": item["sku"], "category": item["category"], "quantity": quantity,
             "amount": item["price"] * quantity, "labels": item["labels"]}
        )  # fmt: skip
    return lines


# --- the programs -----------------------------------------------------------------------------


def _program(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "key": "bench-rules", "name": "Benchmark grocery", "currency": "SEK", "timezone": ZONE,
        "point_value": 50, "expiry": {"kind": "end_of_year", "years_after": 1},
        "event_types": ["app_login", "quiz"], "rules": rules, **extra,
    }  # fmt: skip


#: One rule: 1 point per krone. The baseline of (a).
PROGRAM_1 = _program(
    [{"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}}]
)

#: The simple program of (b): a base rate and a couple of conditions.
PROGRAM_SIMPLE = _program(
    [
        {"id": "base", "priority": 10,
         "when": [{"field": "activity.channel", "op": "ne", "value": "partner"}],
         "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}},
        {"id": "partner", "priority": 10,
         "when": [{"field": "activity.channel", "op": "eq", "value": "partner"}],
         "effect": {"kind": "per_amount", "points": 1, "per_amount": 200}},
        {"id": "weekend", "priority": 50,
         "when": [{"field": "now.weekday", "op": "in", "value": [6, 7]},
                  {"field": "activity.amount", "op": "gte", "value": 20_000}],
         "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]}},
    ]
)  # fmt: skip

_NOT_EARNING = ["tobacco", "deposit", "gift-cards", "pharmacy"]
_MULTIPLIERS = [  # category, percent, weekly cap (points) or None
    ("fruit-veg", 200, 300), ("dairy", 150, None), ("bakery", 150, None), ("meat", 200, 500),
    ("fish", 300, 500), ("frozen", 150, None), ("snacks", 150, 200), ("beverages", 150, None),
    ("coffee", 200, 400), ("household", 150, None),
]  # fmt: skip
_FEATURED = ["dair-003", "bake-007", "cofe-001", "frui-011", "snac-020", "beve-005"]


def _rules_50() -> list[dict[str, Any]]:
    base = {"kind": "per_amount", "points": 1, "per_amount": 100}
    rules: list[dict[str, Any]] = [
        {"id": "base", "priority": 10,
         "when": [{"field": "activity.channel", "op": "ne", "value": "partner"}],
         "lines": {"exclude_categories": _NOT_EARNING}, "effect": base},
        {"id": "partner-stores", "priority": 10,
         "when": [{"field": "activity.channel", "op": "eq", "value": "partner"},
                  {"field": "activity.store", "op": "in", "value": list(STORES[:5])}],
         "lines": {"exclude_categories": _NOT_EARNING},
         "effect": {"kind": "per_amount", "points": 1, "per_amount": 200}},
    ]  # fmt: skip
    for category, percent, cap in _MULTIPLIERS:  # 10 category multipliers
        rule: dict[str, Any] = {
            "id": f"x-{category}", "priority": 40, "lines": {"categories": [category]},
            "effect": {"kind": "multiplier", "percent": percent, "of": ["base"]},
        }  # fmt: skip
        if cap is not None:
            rule["limits"] = {"per_member": [{"period": "week", "points": cap}]}
        rules.append(rule)
    for label, percent in (("organic", 200), ("local", 150), ("eco", 150), ("fairtrade", 150)):
        rules.append(
            {"id": f"label-{label}", "priority": 45, "lines": {"labels": [label]},
             "effect": {"kind": "multiplier", "percent": percent, "of": ["base"]},
             "limits": {"per_activity": 200}}
        )  # fmt: skip
    for n, sku in enumerate(_FEATURED):  # 6 per-unit product rules
        rules.append(
            {"id": f"featured-{n}", "priority": 30, "lines": {"skus": [sku]},
             "effect": {"kind": "per_unit", "points": 25 + 5 * n},
             "limits": {"per_member": [{"period": "week", "times": 2}]}}
        )  # fmt: skip
    rules += [
        # time windows, in the program's zone
        {"id": "happy-hour", "priority": 50,
         "when": [{"field": "now.hour", "op": "between", "value": [14, 16]}],
         "lines": {"categories": ["bakery", "coffee"]},
         "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]}},
        {"id": "weekend", "priority": 50,
         "when": [{"field": "now.weekday", "op": "in", "value": [6, 7]},
                  {"field": "activity.amount", "op": "gte", "value": 30_000}],
         "effect": {"kind": "multiplier", "percent": 150, "of": ["base"]},
         "limits": {"per_member": [{"period": "week", "points": 1_000}]}},
        {"id": "early-bird", "priority": 50,
         "when": [{"field": "now.hour", "op": "lt", "value": 9}],
         "effect": {"kind": "fixed", "points": 15},
         "limits": {"per_member": [{"period": "day", "times": 1}]}},
        {"id": "fruit-tuesday", "priority": 50,
         "when": [{"field": "now.weekday", "op": "eq", "value": 2}],
         "lines": {"categories": ["fruit-veg"]},
         "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}},
        {"id": "summer", "priority": 55, "active_from": "2025-06-15", "active_until": "2025-08-15",
         "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]},
         "limits": {"budget": 5_000_000, "per_member": [{"period": "month", "points": 2_000}]}},
        {"id": "black-friday", "priority": 55,
         "when": [{"field": "now.date", "op": "between", "value": ["2025-11-28", "2025-11-30"]}],
         "effect": {"kind": "multiplier", "percent": 300, "of": ["base"]}},
        # channels and stores
        {"id": "app-bonus", "priority": 60,
         "when": [{"field": "activity.channel", "op": "eq", "value": "app"}],
         "effect": {"kind": "fixed", "points": 20},
         "limits": {"per_member": [{"period": "day", "times": 1}]}},
        {"id": "online-big", "priority": 60, "min_amount": 50_000,
         "when": [{"field": "activity.channel", "op": "eq", "value": "online"}],
         "effect": {"kind": "fixed", "points": 100}},
        {"id": "new-stores", "priority": 60,
         "when": [{"field": "activity.store", "op": "in", "value": list(STORES[15:])}],
         "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]},
         "limits": {"per_activity": 500}},
        # member
        {"id": "new-member", "priority": 65,
         "when": [{"field": "member.days_enrolled", "op": "lt", "value": 30}],
         "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]}},
        {"id": "birthday-week", "priority": 65,
         "when": [{"field": "member.birthday_week", "op": "eq", "value": True}],
         "effect": {"kind": "multiplier", "percent": 300, "of": ["base"]},
         "limits": {"per_member": [{"period": "year", "times": 1}]}},
        {"id": "senior-tuesday", "priority": 65,
         "when": [{"field": "member.age", "op": "gte", "value": 65},
                  {"field": "now.weekday", "op": "eq", "value": 2}],
         "effect": {"kind": "fixed", "points": 30}},
        # basket size
        {"id": "big-basket", "priority": 70, "min_amount": 60_000,
         "lines": {"exclude_categories": _NOT_EARNING},
         "effect": {"kind": "fixed", "points": 100},
         "limits": {"per_member": [{"period": "month", "times": 2}]}},
        # stamp cards and cashback
        {"id": "coffee-stamps", "priority": 80,
         "when": [{"field": "activity.channel", "op": "ne", "value": "partner"}],
         "lines": {"categories": ["coffee"]}, "effect": {"kind": "stamp", "card": "coffee-card"}},
        {"id": "bakery-visits", "priority": 80, "lines": {"categories": ["bakery"]},
         "effect": {"kind": "stamp", "card": "bakery-card", "per": "activity"},
         "limits": {"per_member": [{"period": "day", "times": 1}]}},
        {"id": "eco-cashback", "priority": 85,
         "lines": {"labels": ["eco"], "exclude_categories": _NOT_EARNING},
         "effect": {"kind": "cashback", "basis_points": 200},
         "limits": {"per_member": [{"period": "month", "points": 5_000}]}},
        # the week's offer: best of three
        {"id": "offer-dairy", "priority": 90, "group": "weekly-offer",
         "lines": {"categories": ["dairy"],
                   "when": [{"field": "line.quantity", "op": "gte", "value": 2}]},
         "effect": {"kind": "per_unit", "points": 10}},
        {"id": "offer-meat", "priority": 90, "group": "weekly-offer",
         "lines": {"categories": ["meat", "fish"]},
         "effect": {"kind": "per_amount", "points": 1, "per_amount": 300}},
        {"id": "offer-basket", "priority": 90, "group": "weekly-offer", "min_amount": 40_000,
         "effect": {"kind": "fixed", "points": 40}},
    ]  # fmt: skip
    rules += [  # events
        {"id": "welcome", "on": "signup", "effect": {"kind": "fixed", "points": 500},
         "limits": {"per_member": [{"period": "ever", "times": 1}]}},
        {"id": "profile", "on": "profile_completed", "effect": {"kind": "fixed", "points": 200},
         "limits": {"per_member": [{"period": "ever", "times": 1}]}},
        {"id": "visit", "on": "store_visit", "effect": {"kind": "fixed", "points": 5},
         "limits": {"per_member": [{"period": "day", "times": 1}, {"period": "week", "times": 4}]}},
        {"id": "review", "on": "review", "effect": {"kind": "fixed", "points": 50},
         "when": [{"field": "activity.attributes.stars", "op": "exists"}],
         "limits": {"per_member": [{"period": "month", "times": 3}]}},
        {"id": "share", "on": "social_share", "effect": {"kind": "fixed", "points": 10},
         "limits": {"per_member": [{"period": "week", "times": 2}]}},
        {"id": "survey", "on": "survey_answered", "effect": {"kind": "fixed", "points": 100},
         "limits": {"per_member": [{"period": "month", "times": 1}]}},
        {"id": "birthday", "on": "birthday", "effect": {"kind": "fixed", "points": 250},
         "limits": {"per_member": [{"period": "year", "times": 1}]}},
        {"id": "login", "on": "app_login", "effect": {"kind": "fixed", "points": 2},
         "limits": {"per_member": [{"period": "day", "times": 1}]}},
        {"id": "quiz", "on": "quiz",
         "effect": {"kind": "attribute", "attribute": "score", "points": 1, "per": 1,
                    "factor_by": "level", "factors": {"easy": 50, "hard": 200}},
         "limits": {"per_member": [{"period": "week", "points": 300}]}},
    ]  # fmt: skip
    return rules


PROGRAM_50 = _program(
    _rules_50(),
    stamp_cards=[
        {"id": "coffee-card", "name": "Coffee", "stamps": 10, "reward_points": 150},
        {"id": "bakery-card", "name": "Bakery visits", "stamps": 8, "reward_points": 100},
    ],
)
assert len(PROGRAM_50["rules"]) == 50, len(PROGRAM_50["rules"])


# --- real programs: the example documents, each over a history its rules can match ---------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REAL_START = datetime(2025, 9, 1, tzinfo=UTC)  # a year that holds the examples' dated rules


def _document(name: str) -> dict[str, Any]:
    return parse_document((EXAMPLES / name).read_text()).model_dump(mode="json")


def _pool_of(
    basket: Callable[[random.Random], list[dict[str, Any]]],
) -> Callable[[random.Random, int], list[tuple[int, str]]]:
    """20,000 baskets made by `basket`, as (amount, lines JSON)."""

    def pool(rng: random.Random, _lines: int) -> list[tuple[int, str]]:
        found = []
        for _ in range(20_000):
            lines = basket(rng)
            found.append((sum(ln["amount"] for ln in lines), json.dumps(lines)))
        return found

    return pool


def _bench_pool(rng: random.Random, lines: int) -> list[tuple[int, str]]:
    items = catalogue(rng)
    pool = []
    for _ in range(20_000):
        basket = basket_lines(rng, items, lines)
        pool.append((sum(ln["amount"] for ln in basket), json.dumps(basket)))
    return pool


def _line(sku: str, category: str, price: int, quantity: int = 1) -> dict[str, Any]:
    return {"sku": sku, "category": category, "quantity": quantity, "amount": price * quantity,
            "labels": []}  # fmt: skip


def _cafe_basket(rng: random.Random) -> list[dict[str, Any]]:
    """A till's café order, picked as src/trofast/demo.py picks them (its products; the
    season and the lunch hour aside): a coffee or tea most times, a bun or cake almost every
    other time, sometimes a sandwich or a drink; now and then a friend's order too."""
    picks = []
    if rng.random() < 0.85:
        picks.append(rng.choice(demo.COFFEE))
    if rng.random() < 0.45:
        picks.append(rng.choice(demo.BAKERY))
    if rng.random() < 0.15:
        picks.append(rng.choice(demo.SANDWICHES))
    if rng.random() < 0.1 or not picks:
        picks.append(rng.choice(demo.DRINKS))
    extra = 2 if rng.random() < 0.12 else 1
    quantities: dict[Any, int] = {}
    for product in picks:
        quantities[product] = quantities.get(product, 0) + extra
    return [_line(p.sku, p.category, p.price, q) for p, q in quantities.items()]


def _cafe_web_basket(rng: random.Random) -> list[dict[str, Any]]:
    """A web-shop order of beans and mugs (demo.py's WEBSHOP)."""
    quantities: dict[Any, int] = {}
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        product = rng.choice(demo.WEBSHOP)
        quantities[product] = quantities.get(product, 0) + 1
    return [_line(p.sku, p.category, p.price, q) for p, q in quantities.items()]


#: Torvet's categories: the benchmark catalogue with lottery (which grocery.yaml excludes)
#: in place of pharmacy; labels as there (organic is what its personal offer multiplies).
GROCERY_CATEGORIES = {
    ("lottery" if name == "pharmacy" else name): value for name, value in CATEGORIES.items()
}


def _grocery_pool(rng: random.Random, lines: int) -> list[tuple[int, str]]:
    items = catalogue(rng, GROCERY_CATEGORIES)
    return _pool_of(lambda r: basket_lines(r, items, lines))(rng, lines)


#: Linnéa & Co's catalogue: category -> (share of lines, price range in öre).
FASHION_CATEGORIES: dict[str, tuple[int, tuple[int, int]]] = {
    "tops": (25, (14_900, 49_900)), "knitwear": (10, (39_900, 99_900)),
    "trousers": (12, (39_900, 89_900)), "denim": (12, (59_900, 129_900)),
    "dresses": (10, (49_900, 149_900)), "outerwear": (6, (99_900, 299_900)),
    "shoes": (8, (69_900, 199_900)), "accessories": (10, (9_900, 39_900)),
    "outlet": (6, (9_900, 49_900)), "gift-cards": (1, (20_000, 100_000)),
}  # fmt: skip


def _fashion_pools() -> tuple[
    Callable[[random.Random, int], list[tuple[int, str]]],
    Callable[[random.Random, int], list[tuple[int, str]]],
]:
    """(shop pool, web pool): one to four garments; a web order has a shipping line too."""
    items: list[dict[str, Any]] = []

    def garments(rng: random.Random) -> list[dict[str, Any]]:
        if not items:
            items.extend(catalogue(random.Random(SEED + 3), FASHION_CATEGORIES))
        weights = [item["share"] for item in items]
        count = rng.choice((1, 1, 1, 2, 2, 3, 4))
        return [
            _line(item["sku"], item["category"], item["price"])
            for item in rng.choices(items, weights, k=count)
        ]

    def shipped(rng: random.Random) -> list[dict[str, Any]]:
        lines = garments(rng)
        free = sum(ln["amount"] for ln in lines) >= 49_900
        return [*lines, _line("shipping", "shipping", 0 if free else 4_900)]

    return _pool_of(garments), _pool_of(shipped)


@dataclass(frozen=True)
class Profile:
    """A program and the history generated for it: activities its rules can match."""

    name: str
    document: dict[str, Any]  # replayed, and applied as the stored version
    start: datetime
    currency: str
    pool: Callable[[random.Random, int], list[tuple[int, str]]]  # (amount, lines JSON)
    stores: tuple[str, ...]
    channels: tuple[str, ...]
    events: tuple[str, ...]
    purchase_share: float = 0.88  # then events up to 0.98, then returns
    #: channel -> its own pool (a web shop's orders differ from a till's)
    channel_pools: dict[str, Callable[[random.Random, int], list[tuple[int, str]]]] = field(
        default_factory=dict
    )
    #: the stores of the `partner` channel
    partner_stores: tuple[str, ...] = ()
    #: (tag, share of members)
    tags: tuple[tuple[str, float], ...] = ()
    note: str = ""

    @property
    def end(self) -> datetime:
        return self.start + SPAN * 2  # the replay's [start, end): all of the history


#: The history of (b) for the simple and the 50-rule program.
BENCH = Profile(
    "bench", PROGRAM_SIMPLE, START, "SEK", _bench_pool, STORES, CHANNELS, EVENTS
)  # fmt: skip


def real_profiles() -> dict[str, Profile]:
    cafe_stores = tuple(store.code for store in demo.STORES for _ in range(store.weight // 3))
    shop, web = _fashion_pools()
    return {
        "cafe": Profile(
            "cafe",
            parse_document(demo.PROGRAM_DOCUMENT).model_dump(mode="json"),
            REAL_START,
            "SEK",
            _pool_of(_cafe_basket),
            cafe_stores,
            ("store",) * 9 + ("online",),
            ("signup", "birthday"),
            purchase_share=0.96,
            channel_pools={"online": _pool_of(_cafe_web_basket)},
            note="demo.py's program (examples/cafe.yaml) and products, 1-4 lines;"
            " 2 % signup/birthday events",
        ),
        "grocery": Profile(
            "grocery",
            _document("grocery.yaml"),
            REAL_START,
            "DKK",
            _grocery_pool,
            tuple(f"torvet-{n:02d}" for n in range(1, 18)),
            CHANNELS,
            (),
            purchase_share=0.98,
            partner_stores=("brasa-aarhus-c", "brasa-vejle", "apoteket-odense", "brasa-kolding"),
            tags=(("organic-fan", 0.1),),
            note="examples/grocery.yaml over the benchmark catalogue (lottery for pharmacy),"
            " 10 lines; partner purchases at partner stores, 10 % of members organic-fan;"
            " no events (no event rules)",
        ),
        "fashion": Profile(
            "fashion",
            _document("fashion-eshop.yaml"),
            REAL_START,
            "SEK",
            shop,
            ("linnea-stockholm", "linnea-goteborg"),
            ("store",) * 2 + ("online",) * 5 + ("app",) * 3,
            ("signup", "review"),
            purchase_share=0.93,
            channel_pools={"online": web, "app": web},
            note="examples/fashion-eshop.yaml (three tiers by spend), 1-4 garments, web and app"
            " orders with a shipping line; 5 % signup/review events",
        ),
    }


# --- measuring --------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of one call, GC as in production."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _rate(fn: Callable[[Any], Any], items: Sequence[Any], seconds: float) -> dict[str, float]:
    """Call `fn` on `items` over and over for about `seconds`; calls per second."""
    count = 0
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    while True:
        for item in items:
            fn(item)
        count += len(items)
        elapsed = time.perf_counter() - wall
        if elapsed >= seconds:
            break
    cpu_used = time.process_time() - cpu
    return {"calls": count, "seconds": elapsed, "per_second": count / elapsed,
            "us_per_call": elapsed / count * 1e6, "cpu_share": cpu_used / elapsed}  # fmt: skip


def facts_from_body(body: dict[str, Any], occurred_at: datetime, row: dict[str, Any]) -> Any:
    """ActivityFacts of a decoded purchase body, the way a replay builds them."""
    return engine.ActivityFacts(
        type="purchase", occurred_at=occurred_at, amount=row["amount"], store=row["store"],
        channel=row["channel"],
        lines=tuple(
            engine.Line(ln["sku"], int(ln.get("quantity", 1)), int(ln["amount"]),
                        ln.get("category"), tuple(ln.get("labels", ())))
            for ln in body.get("lines", ())
        ),
    )  # fmt: skip


def members_for(rng: random.Random, count: int, start: datetime = START) -> list[dict[str, Any]]:
    rows = []
    first = start - timedelta(days=730)
    for n in range(count):
        born = (
            date(1940, 1, 1) + timedelta(days=rng.randint(0, 365 * 65))
            if rng.random() < 0.7
            else None
        )
        rows.append(
            {"id": n + 1, "status": "active" if rng.random() < 0.98 else "suspended",
             "birth_date": born, "channel": rng.choice(("store", "app", "online")),
             "enrolled_at": first + timedelta(seconds=rng.randint(0, 3 * 365 * 86_400))}
        )  # fmt: skip
    return rows


def measure_evaluate(seconds: float, lines: int) -> dict[str, Any]:
    """(a): evaluations/s in memory, 50 rules against 1 rule against building the facts."""
    rng = random.Random(SEED)
    items = catalogue(rng)
    members = [
        engine.MemberSnapshot(
            id=m["id"], status=m["status"], birth_date=m["birth_date"],
            enrolled_at=m["enrolled_at"], channel=m["channel"],
        )
        for m in members_for(rng, 1_000)
    ]  # fmt: skip
    inputs = []
    moment = START
    for n in range(5_000):
        moment += timedelta(seconds=rng.randint(1, 2 * 6_307))  # ~ a year for 5,000
        basket = basket_lines(rng, items, lines)
        row = {"amount": sum(ln["amount"] for ln in basket), "store": rng.choice(STORES),
               "channel": rng.choice(CHANNELS)}  # fmt: skip
        body = {"type": "purchase", "external_id": f"r-{n}", "lines": basket, **row}
        inputs.append((body, moment, row, rng.choice(members)))
    facts = [(facts_from_body(body, at, row), member) for body, at, row, member in inputs]

    def evaluator(spec: ProgramSpec) -> tuple[Callable[[Any], Any], Callable[[], int]]:
        counts: dict[int, dict[str, tuple[int, int]]] = {m.id: {} for m in members}
        shared: dict[str, int] = {}
        total = [0]

        def one(pair: tuple[engine.ActivityFacts, engine.MemberSnapshot]) -> None:
            mine = counts[pair[1].id]
            result = engine.evaluate(
                spec, pair[0], pair[1], engine.Counters(mine, shared), dates=False
            )
            engine.apply_counters(mine, shared, result.counters)
            total[0] += result.total_points

        return one, lambda: total[0]

    def replayer(spec: ProgramSpec) -> Callable[[Any], Any]:
        """rules.replay.points, as analytics.simulate runs it: the same points, no effects."""
        program = engine.compile_program(spec)
        counts: dict[int, dict[str, tuple[int, int]]] = {m.id: {} for m in members}
        shared: dict[str, int] = {}

        def one(pair: tuple[engine.ActivityFacts, engine.MemberSnapshot]) -> None:
            replay_points(program, pair[0], pair[1], counts[pair[1].id], shared)

        return one

    specs = {
        "1 rule": ProgramSpec.model_validate(PROGRAM_1),
        "simple": ProgramSpec.model_validate(PROGRAM_SIMPLE),
        "50 rules": ProgramSpec.model_validate(PROGRAM_50),
    }
    # Results first (one pass each, fresh counters): points to compare runs by.
    checks = {}
    for name, spec in specs.items():
        one, total = evaluator(spec)
        for pair in facts:
            one(pair)
        checks[name] = total()
    arms: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {
        "build_facts": (lambda item: facts_from_body(item[0], item[1], item[2]), inputs),
        "evaluate_1_rule": (evaluator(specs["1 rule"])[0], facts),
        "evaluate_simple": (evaluator(specs["simple"])[0], facts),
        "evaluate_50_rules": (evaluator(specs["50 rules"])[0], facts),
        "points_only_simple": (replayer(specs["simple"]), facts),
        "points_only_50_rules": (replayer(specs["50 rules"]), facts),
    }
    rates = _in_turns(arms, seconds)
    eval_1, eval_50 = rates["evaluate_1_rule"], rates["evaluate_50_rules"]
    return {
        "lines": lines, "baskets": len(facts), "points": checks, **rates,
        "ratio_50_to_1": eval_50["us_per_call"] / eval_1["us_per_call"],
        "ratio_50_to_build": eval_50["us_per_call"] / rates["build_facts"]["us_per_call"],
        "us_per_extra_rule": (eval_50["us_per_call"] - eval_1["us_per_call"]) / 49,
    }  # fmt: skip


def _in_turns(
    arms: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]], seconds: float, turns: int = 3
) -> dict[str, dict[str, float]]:
    """`_rate` of every arm, `seconds` each in all, taking turns so that a change in the
    machine's load hits them alike."""
    calls = dict.fromkeys(arms, 0)
    spent = dict.fromkeys(arms, 0.0)
    cpu = dict.fromkeys(arms, 0.0)
    for _ in range(turns):
        for name, (fn, items) in arms.items():
            rate = _rate(fn, items, seconds / turns)
            calls[name] += int(rate["calls"])
            spent[name] += rate["seconds"]
            cpu[name] += rate["cpu_share"] * rate["seconds"]
    return {
        name: {"calls": calls[name], "seconds": spent[name],
               "per_second": calls[name] / spent[name],
               "us_per_call": spent[name] / calls[name] * 1e6, "cpu_share": cpu[name] / spent[name]}
        for name in arms
    }  # fmt: skip


# --- the stored history -----------------------------------------------------------------------

ACTIVITY_COLUMNS = (
    "id", "program_id", "external_id", "type", "member_id", "occurred_at", "amount", "currency",
    "store", "channel", "event_type", "original_id", "body", "request_hash", "program_version",
    "points", "result", "received_at",
)  # fmt: skip
MEMBER_COLUMNS = (
    "id", "program_id", "loyalty_number", "birth_date", "marketing_consent", "channel", "status",
    "enrolled_at", "updated_at", "tags",
)  # fmt: skip


def history(
    rng: random.Random,
    program_id: int,
    version: int,
    count: int,
    member_count: int,
    lines: int,
    profile: Profile = BENCH,
) -> Iterator[tuple[Any, ...]]:
    """`count` activities in time order, as rows of ACTIVITY_COLUMNS (occurred_at in UTC).

    For BENCH: 88 % purchases of `lines` lines (5 % of them anonymous), 10 % events, 2 %
    returns of an earlier purchase; other profiles set their own share of purchases, baskets,
    stores, channels and events. Line lists come from a pool of 20,000 baskets, so that
    generating a million rows takes seconds; every body is the JSON a till would have sent.
    """
    pool = profile.pool(rng, lines)
    pools = {channel: make(rng, lines) for channel, make in profile.channel_pools.items()}
    stores, channels, events = profile.stores, profile.channels, profile.events
    partner_stores, currency = profile.partner_stores, profile.currency
    purchase_share = profile.purchase_share
    step = SPAN / count
    recent: list[tuple[int, str, int, int]] = []  # (id, external id, amount, member) of purchases
    stamp = '"request_hash":"-","program_version":1'
    for n in range(count):
        activity_id = n + 1
        at = profile.start + step * n + step * rng.random() * 0.9
        when = at.isoformat()
        external_id = f"a{activity_id:08d}"
        roll = rng.random()
        member_id: int | None = rng.randint(1, member_count)
        if roll < purchase_share:
            amount, lines_json = rng.choice(pool)
            store, channel = rng.choice(stores), rng.choice(channels)
            if channel in pools:
                amount, lines_json = rng.choice(pools[channel])
            if partner_stores and channel == "partner":
                store = rng.choice(partner_stores)
            if rng.random() < 0.05:
                member_id = None
            ref = "" if member_id is None else f',"member_id":{member_id}'
            body = (
                f'{{"type":"purchase","external_id":"{external_id}","occurred_at":"{when}",'
                f'"amount":{amount},"currency":"{currency}","store":"{store}",'
                f'"channel":"{channel}","lines":{lines_json}{ref}}}'
            )
            if member_id is not None:
                recent.append((activity_id, external_id, amount, member_id))
                if len(recent) > 5_000:
                    del recent[:1_000]
            yield (activity_id, program_id, external_id, "purchase", member_id, at, amount,
                   currency, store, channel, None, None, body, stamp, version, amount // 100, "{}",
                   at)  # fmt: skip
        elif (roll < 0.98 and events) or not recent:
            event = rng.choice(events or EVENTS)
            attributes: dict[str, Any] = {}
            if event == "review":
                attributes = {"stars": rng.randint(1, 5)} if rng.random() < 0.8 else {}
            elif event == "quiz":
                attributes = {"score": rng.randint(0, 100), "level": rng.choice(("easy", "hard"))}
            body = json.dumps(
                {"type": "event", "external_id": external_id, "event_type": event,
                 "occurred_at": when, "attributes": attributes, "member_id": member_id}
            )  # fmt: skip
            yield (activity_id, program_id, external_id, "event", member_id, at, None, None,
                   None, None, event, None, body, stamp, version, 0, "{}", at)  # fmt: skip
        else:
            original_id, original_external, original_amount, member_id = rng.choice(recent)
            amount = max(1, original_amount * rng.choice((1, 1, 2, 3)) // 4)
            body = json.dumps(
                {"type": "return", "external_id": external_id, "occurred_at": when,
                 "original_external_id": original_external, "amount": amount}
            )  # fmt: skip
            yield (activity_id, program_id, external_id, "return", member_id, at, amount,
                   currency, None, None, None, original_id, body, stamp, version, 0, "{}",
                   at)  # fmt: skip


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a UtcDateTime in SQLite: naive UTC text."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def load(
    url: str, count: int, member_count: int, lines: int, profile: Profile = BENCH
) -> tuple[int, int]:
    """Migrate, apply the profile's program (BENCH: the simple program), write the members
    and `count` activities.

    Returns (program id, member count). Members have ids 1..member_count.
    """
    rng = random.Random(SEED)
    migrations.upgrade(url)
    db = connect(url)
    try:
        with db.write() as conn:
            spec = ProgramSpec.model_validate(profile.document)
            program = programs.apply(conn, spec, profile.start)
    finally:
        db.dispose()
    pid, version = program.program_id, program.version
    people = members_for(rng, member_count, profile.start)
    tagger = random.Random(SEED + 1)  # BENCH's members have none (and rng is left alone)
    tags = [
        json.dumps([tag for tag, share in profile.tags if tagger.random() < share]) for _ in people
    ]
    member_rows = [
        (m["id"], pid, f"{m['id']:012d}", m["birth_date"], False, m["channel"], m["status"],
         m["enrolled_at"], m["enrolled_at"], tag)
        for m, tag in zip(people, tags, strict=True)
    ]  # fmt: skip
    rows = history(rng, pid, version, count, member_count, lines, profile)
    if make_url(url).get_backend_name() == "sqlite":
        _load_sqlite(make_url(url).database or "", member_rows, rows)
    else:
        _load_postgresql(url, member_rows, rows)
    return pid, member_count


def _load_sqlite(
    path: str, member_rows: list[tuple[Any, ...]], rows: Iterator[tuple[Any, ...]]
) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO members ({', '.join(MEMBER_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(MEMBER_COLUMNS))})",
        [(*m[:3], m[3] and m[3].isoformat(), *m[4:7], _sqlite_time(m[7]), _sqlite_time(m[8]),
          m[9]) for m in member_rows],
    )  # fmt: skip
    insert = (
        f"INSERT INTO activities ({', '.join(ACTIVITY_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(ACTIVITY_COLUMNS))})"
    )
    for chunk in _chunks(rows, 20_000):
        conn.executemany(
            insert, [(*r[:5], _sqlite_time(r[5]), *r[6:17], _sqlite_time(r[17])) for r in chunk]
        )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _load_postgresql(
    url: str, member_rows: list[tuple[Any, ...]], rows: Iterator[tuple[Any, ...]]
) -> None:
    with psycopg.connect(_libpq(url)) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY members ({', '.join(MEMBER_COLUMNS)}) FROM STDIN") as copy:
                for member in member_rows:
                    copy.write_row(member)
            with cur.copy(f"COPY activities ({', '.join(ACTIVITY_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            for table in ("members", "activities"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
        conn.commit()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- (b) the replay ---------------------------------------------------------------------------

END = START + SPAN * 2  # the replay's [start, end): all of the history
_SELECT = (
    "SELECT id, type, member_id, occurred_at, amount, currency, store, channel, event_type,"
    " original_id, {body}, points FROM activities WHERE program_id = {p}"
    " AND occurred_at >= {p} AND occurred_at < {p} ORDER BY occurred_at, id"
)


def raw_read(url: str, program_id: int, decode: bool) -> int:
    """The floor: the replay's rows through the bare DB-API cursor, nothing done with them.
    With `decode`, every body is read and parsed too (JSON and the timestamp): what a replay
    that needs every purchase's lines cannot avoid."""
    count = 0
    loads, parse = json.loads, datetime.fromisoformat
    body = "body" if decode else "NULL"
    if make_url(url).get_backend_name() == "sqlite":
        conn = sqlite3.connect(make_url(url).database or "")
        cur = conn.execute(
            _SELECT.format(p="?", body=body), (program_id, _sqlite_time(START), _sqlite_time(END))
        )
        while rows := cur.fetchmany(10_000):
            count += len(rows)
            if decode:
                for row in rows:
                    loads(row[10])
                    parse(row[3] + "+00:00")
        conn.close()
        return count
    with psycopg.connect(_libpq(url)) as pg, pg.cursor(name="replay") as cur:
        # body as text, so that JSON is parsed only with `decode` (psycopg would parse it)
        cur.execute(_SELECT.format(p="%s", body=f"{body}::text"), (program_id, START, END))
        while rows := cur.fetchmany(10_000):
            count += len(rows)
            if decode:
                for row in rows:
                    loads(row[10])
    return count


def bodies_for(spec: ProgramSpec) -> tuple[str, ...]:
    """The bodies `simulate` reads for `spec` (see analytics/simulate.py)."""
    program = engine.compile_program(spec)
    events = any(trigger != "purchase" for trigger in program.by_trigger)
    return (("purchase",) if program.reads_lines else ()) + (("event",) if events else ())


def trofast_read(
    url: str,
    program_id: int,
    spec: ProgramSpec,
    facts: bool,
    start: datetime = START,
    end: datetime = END,
) -> int:
    """The read loop of `simulate` for `spec` and nothing more: rows streamed and unpacked,
    timestamps parsed; with `facts`, also the ActivityFacts built (bodies decoded where the
    program reads them), as the replay does before it evaluates."""
    bodies = bodies_for(spec)
    lines = "purchase" in bodies
    db = connect(url)
    count = 0
    try:
        with db.read() as conn:
            for rows in repository.activity_chunks(conn, program_id, start, end, bodies=bodies):
                for (_id, kind, member_id, occurred_at, amount, currency, store, channel,
                     event_type, _original, body, _points) in rows:  # fmt: skip
                    if type(occurred_at) is str:
                        occurred_at = datetime.fromisoformat(occurred_at)
                    count += 1
                    if not facts or member_id is None:
                        continue
                    if kind == "purchase":
                        engine.ActivityFacts(
                            "purchase", occurred_at, amount or 0, currency, store, channel,
                            decode_body(body).lines if lines else (),
                        )  # fmt: skip
                    elif kind == "event" and body is not None:
                        engine.ActivityFacts(
                            "event", occurred_at, event_type=event_type,
                            attributes=decode_body(body).attributes,
                        )  # fmt: skip
        return count
    finally:
        db.dispose()


def replay(
    url: str,
    program_id: int,
    spec: ProgramSpec,
    start: datetime = START,
    end: datetime = END,
    workers: int = 1,
) -> Any:
    db = connect(url)
    try:
        with db.read() as conn:
            return simulate(conn, program_id, spec, start, end, workers=workers)
    finally:
        db.dispose()


def digest(result: Any) -> dict[str, Any]:
    """The replay's results, and a short hash of them to compare runs by: points per month,
    and the vouchers and members by tier per month where the program has any."""
    months: list[tuple[Any, ...]] = [
        (m.month, m.activities, m.actual_points, m.simulated_points) for m in result.months
    ]
    if any(m.simulated_vouchers or m.simulated_tiers for m in result.months):
        months = [
            (*row, m.simulated_vouchers, m.simulated_tiers)
            for row, m in zip(months, result.months, strict=True)
        ]
    text = json.dumps(months)
    return {"sha1": hashlib.sha1(text.encode()).hexdigest()[:12],
            "simulated_points": sum(m[3] for m in months), "months": months}  # fmt: skip


def _row(label: str, wall: float, cpu: float, count: int, note: str = "") -> dict[str, Any]:
    """One measurement: per second of wall time, and per second of this process's CPU time
    (what one core does when it is not shared; the machine may be busy with other work)."""
    print(
        f"  {label:<34} {wall:7.2f} s {count / wall:>11,.0f}/s  (CPU {cpu:6.2f} s,"
        f" {count / cpu:>9,.0f}/CPU-s){note}",
        flush=True,
    )
    return {
        "seconds": wall, "cpu_seconds": cpu, "per_second": count / wall,
        "per_cpu_second": count / cpu,
    }  # fmt: skip


def measure_simulate(
    database: Callable[[str], str],
    count: int,
    lines: int,
    names: Sequence[str],
    workers: int = 1,
) -> dict[str, Any]:
    members = max(1_000, count // 100)
    out: dict[str, Any] = {"activities": count, "members": members}
    bench = [name for name in ("simple", "50_rules") if name in names]
    if bench:
        url = database("bench")
        wall, _, (program_id, _) = _timed(lambda: load(url, count, members, lines))
        print(f"  loaded {count:,} activities, {members:,} members in {wall:.0f} s", flush=True)
        out["load_seconds"] = wall
        raw_read(url, program_id, True)  # warm the page cache
        for name, decode in (("raw_read", False), ("raw_read_decode", True)):
            wall, cpu, rows = _timed(lambda decode=decode: raw_read(url, program_id, decode))
            label = "raw DB-API read" + (", JSON decoded" if decode else "")
            out[name] = _row(label, wall, cpu, rows)
            if rows != count:
                raise RuntimeError(f"{name} read {rows} rows, expected {count}")
        documents = {"simple": PROGRAM_SIMPLE, "50_rules": PROGRAM_50}
        for name in bench:
            out[f"simulate_{name}"] = measure_replay(
                url, program_id, name, documents[name], BENCH, workers
            )
    profiles = real_profiles()
    for name in names:
        profile = profiles.get(name)
        if profile is None:
            continue
        url = database(name)
        wall, _, (program_id, _) = _timed(
            lambda profile=profile, url=url: load(url, count, members, lines, profile)
        )
        print(f"  {name}: loaded {count:,} activities in {wall:.0f} s ({profile.note})")
        trofast_read(url, program_id, ProgramSpec.model_validate(profile.document), True)  # warm
        out[f"simulate_{name}"] = {
            "history": profile.note, "load_seconds": wall,
            **measure_replay(url, program_id, name, profile.document, profile, workers),
        }  # fmt: skip
    return out


def measure_replay(
    url: str,
    program_id: int,
    name: str,
    document: dict[str, Any],
    profile: Profile,
    workers: int = 1,
) -> dict[str, Any]:
    """One program's replay, beside its own read loop (and that loop building the facts);
    with `workers` > 1, also the replay shared between that many processes (wall time: the
    CPU time of the workers is not this process's)."""
    spec = ProgramSpec.model_validate(document)
    start, end = profile.start, profile.end
    print(f"  {name.replace('_', ' ')} program (bodies read: {bodies_for(spec) or 'none'})")
    read_wall, read_cpu, rows = _timed(
        lambda: trofast_read(url, program_id, spec, False, start, end)
    )
    facts_wall, facts_cpu, _ = _timed(lambda: trofast_read(url, program_id, spec, True, start, end))
    wall, cpu, result = _timed(lambda: replay(url, program_id, spec, start, end))
    if result.activities != rows:
        raise RuntimeError(f"read {rows} rows and replayed {result.activities}")
    found = digest(result)
    print(
        f"    share of simulate: reading rows {read_wall / wall:.0%}, decoding and facts"
        f" {(facts_wall - read_wall) / wall:.0%}, evaluating and the rest"
        f" {1 - facts_wall / wall:.0%}; hash {found['sha1']}",
        flush=True,
    )
    out = {
        "read": _row("  read loop of simulate", read_wall, read_cpu, rows),
        "facts": _row("  ... and ActivityFacts built", facts_wall, facts_cpu, rows),
        **_row("  simulate", wall, cpu, rows, f"  {found['simulated_points']:,} points"),
        "read_share": read_wall / wall,
        "facts_share": (facts_wall - read_wall) / wall,
        "evaluate_share": 1 - facts_wall / wall,
        "digest": found,
    }  # fmt: skip
    if workers > 1 and parallel(spec):
        shared_wall, _, shared = _timed(lambda: replay(url, program_id, spec, start, end, workers))
        if digest(shared) != found:
            raise RuntimeError(f"{workers} processes found other results than one")
        print(
            f"    simulate, {workers} processes {shared_wall:7.2f} s"
            f" {rows / shared_wall:>11,.0f}/s  ({wall / shared_wall:.2f}x one process's wall"
            " time, same results)",
            flush=True,
        )
        out["shared"] = {
            "workers": workers,
            "seconds": shared_wall,
            "per_second": rows / shared_wall,
            "speedup": wall / shared_wall,
        }
    return out


@contextlib.contextmanager
def sqlite_url() -> Iterator[Callable[[str], str]]:
    """A maker of database URLs by name (a file each, in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="trofast-rules-") as tmp:
        yield lambda name: f"sqlite:///{tmp}/{name}.db"


@contextlib.contextmanager
def postgresql_url() -> Iterator[Callable[[str], str]]:
    """A maker of database URLs by name (a database each, on one throwaway server)."""
    with pgserver.throwaway_postgres() as server:
        yield lambda name: pgserver.create_database(server, name)


PROGRAMS = ("simple", "50_rules", "cafe", "grocery", "fashion")


# --- report -----------------------------------------------------------------------------------


def print_evaluate(result: dict[str, Any]) -> None:
    print(f"\n(a) engine.evaluate, baskets of {result['lines']} lines, in memory")
    for key, label in (
        ("build_facts", "build the ActivityFacts only"),
        ("evaluate_1_rule", "evaluate, 1 rule"),
        ("evaluate_simple", "evaluate, simple program (3 rules)"),
        ("evaluate_50_rules", "evaluate, 50 rules"),
        ("points_only_simple", "replay.points (simulate), simple"),
        ("points_only_50_rules", "replay.points (simulate), 50 rules"),
    ):
        row = result[key]
        print(
            f"  {label:<36} {row['per_second']:>10,.0f}/s  {row['us_per_call']:7.1f} µs"
            f"  (CPU {row['cpu_share']:4.0%})"
        )
    print(
        f"  50 rules cost {result['ratio_50_to_1']:.1f}x one rule,"
        f" {result['ratio_50_to_build']:.1f}x building the facts;"
        f" {result['us_per_extra_rule']:.2f} µs per extra rule"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activities", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--lines", type=int, default=10, help="lines per basket")
    parser.add_argument("--seconds", type=float, default=3, help="per evaluate measurement")
    parser.add_argument("--skip-evaluate", action="store_true")
    parser.add_argument("--skip-simulate", action="store_true")
    parser.add_argument(
        "--programs", default=",".join(PROGRAMS), help=f"replayed in (b), of {','.join(PROGRAMS)}"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="also replay with the members shared between this many processes (1: not)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    if not args.skip_evaluate:
        report["evaluate"] = measure_evaluate(args.seconds, args.lines)
        print_evaluate(report["evaluate"])
    if not args.skip_simulate:
        targets = [("sqlite", sqlite_url), ("postgresql", postgresql_url)]
        for name, opener in targets:
            if args.db not in (name, "both"):
                continue
            print(f"\n(b) simulate over {args.activities:,} stored activities, {name}", flush=True)
            with opener() as database:
                report[f"simulate_{name}"] = measure_simulate(
                    database, args.activities, args.lines, args.programs.split(","), args.workers
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
