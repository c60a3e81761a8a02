"""The demo café chain behind `trofast demo`: a deterministic history made by the real services.

`ensure_demo` applies the Kaffekoppen program (the text of examples/cafe.yaml), plans
18 months of members, purchases and returns with `random.Random(2026)`, and plays them
forward day by day on a `FixedClock`, one transaction per day: enrolments go through
`members.service.enrol`, runs of purchases through `activities.service.ingest_many` (as a
till uploads them), returns through `ingest`, rewards through `rewards.service.redeem`
(a voucher, used on the same receipt), and the vesting and expiry jobs run every simulated
night. The same arguments always
produce the same members, loyalty numbers and activities.
"""

from __future__ import annotations

import random
import time
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, groupby
from typing import NamedTuple
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import Connection

from trofast.access import service as access
from trofast.activities import service as activities
from trofast.activities.schemas import EventIn, LineIn, PurchaseIn, ReturnIn, SalesChannel
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock, SystemClock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import service as member_service
from trofast.members.schemas import Channel, MemberIn
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec, parse_document
from trofast.rewards import service as rewards

PROGRAM_KEY = "kaffekoppen"
SEED = 2026
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
START = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)  # 18 months before NOW
ZONE = ZoneInfo("Europe/Stockholm")
ACTOR = "demo"

#: The program document; examples/cafe.yaml holds exactly this text.
PROGRAM_DOCUMENT = """\
# Kaffekoppen: the café chain behind `trofast demo`.
# Check it with `trofast program validate examples/cafe.yaml`;
# src/trofast/demo.py embeds this exact text (a test keeps the two identical).
key: kaffekoppen
name: Kaffekoppen
currency: SEK
timezone: Europe/Stockholm
country: SE
locales: [sv, en]
point_name: bönor
point_value: 1000 # in 1/100 öre: one böna is worth 10 öre, so 100 bönor ≈ 10 SEK
earn:
  points: 1
  per_amount: 1000 # one böna for every full 10.00 SEK
vesting_days: 14
expiry:
  kind: after_months
  months: 12
negative_balance: forbid
rules:
  - id: base
    name: En böna per 10 kr
    effect: {kind: per_amount, points: 1, per_amount: 1000}
  - id: weekend-fika
    name: Dubbla bönor på fikabröd på helgen
    priority: 200
    lines: {categories: [bakery]}
    when:
      - {field: now.weekday, op: in, value: [6, 7]}
    effect: {kind: multiplier, percent: 200, of: [base]}
    limits:
      per_member: [{period: day, points: 20}]
  - id: coffee-card
    name: Var tionde kaffe bjuder vi på
    lines: {categories: [coffee]}
    effect: {kind: stamp, card: kaffekort}
  - id: bean-card
    name: Smakprov efter fem bönköp
    lines: {categories: [beans]}
    effect: {kind: stamp, card: bonkort, per: activity}
  - id: welcome
    name: Välkomstbonus
    on: signup
    effect: {kind: fixed, points: 25}
  - id: birthday
    name: Födelsedagsbonus
    on: birthday
    effect: {kind: fixed, points: 100}
    limits:
      per_member: [{period: year, times: 1}]
stamp_cards:
  - id: kaffekort
    name: Kaffekort
    stamps: 10
    reward_points: 40 # a free coffee is worth about 40 bönor
  - id: bonkort
    name: Bönkort
    stamps: 5
    reward: smakprov # 1. a free sample after five purchases of beans
# The rewards catalogue: the ten kinds of reward of seed 004, spent with bönor (or given).
rewards:
  - id: bryggkaffe
    type: free_product
    name: {sv: En bryggkaffe, en: A filter coffee}
    cost: 350
    sku: bryggkaffe
    valid_days: 30
    channels: [store]
  - id: kanelbulle
    type: free_product
    name: {sv: En kanelbulle, en: A cinnamon bun}
    cost: 390
    sku: kanelbulle
    valid_days: 30
    channels: [store]
  - id: rabatt-50kr
    type: discount
    name: {sv: 50 kr rabatt, en: 50 SEK off}
    cost: 500
    amount: 5000
    min_order: 10000
    valid_days: 60
  - id: fika
    type: discount
    name: {sv: Fika för två, en: Coffee and a bun for two}
    cost: 700
    amount: 15000
    scope: {categories: [coffee, tea, bakery]}
    valid_days: 60
    channels: [store]
  - id: smakprov # 1. a free sample: granted (cost 0) by the bönkort stamp card
    type: free_product
    name: {sv: Smakprov av månadens bönor, en: A sample of the month's beans}
    cost: 0
    sku: smakprov-bonor
    valid_days: 30
  - id: forhandsvisning # 2. exclusive previews
    type: early_access
    name: {sv: Förhandsvisning av höstens rosterier, en: Preview of the autumn roasts}
    cost: 200
    access: hostens-rosterier
    valid_days: 30
  - id: dina-bonor # 3. a personal discount for those who buy beans
    type: discount
    name: {sv: 20 % på dina favoritbönor, en: 20 % off your favourite beans}
    cost: 300
    percent: 20
    max_discount: 5000
    scope: {categories: [beans]}
    eligible: {tags: [bonkopare]}
    limit: {count: 1, per: month}
  - id: presentkort-200 # 4. points for gift cards, codes from the provider's pool
    type: gift_card
    name: {sv: Presentkort 200 kr, en: Gift card 200 SEK}
    cost: 2000
    value: 20000
    pool: presentkort-200
    low_stock: 10
  - id: kaffeprovning # 5. invitations to a VIP event with limited places
    type: event
    name: {sv: Kaffeprovning med våra rostare, en: Coffee tasting with our roasters}
    cost: 800
    event: Kaffeprovning, rosteriet på Södermalm
    stock: 20
  # 6. extra bönor in the birthday week: the `birthday` rule above.
  - id: fri-frakt # 7. free shipping on the next web-shop order
    type: free_shipping
    name: {sv: Fri frakt, en: Free shipping}
    cost: 150
    valid_days: 90
  - id: vip-service # 8. VIP customer service
    type: service_perk
    name: {sv: Prioriterad kundservice, en: Priority customer service}
    cost: 400
    perk: prioriterad-support
    valid_days: 90
  - id: guldkoppen # 9. a digital trophy (until badges arrive, fulfilled by the shop)
    type: custom
    name: {sv: "Digital trofé: Guldkoppen", en: "Digital trophy: the Golden Cup"}
    cost: 1000
    attributes: {badge: guldkoppen}
  - id: plantera-ett-trad # 10. charity donations
    type: donation
    name: {sv: Plantera ett träd med Vi-skogen, en: Plant a tree with Vi-skogen}
    cost: 100
    cause: vi-skogen
    amount: 1000
"""


@dataclass(frozen=True)
class Store:
    code: str
    receipt_prefix: str
    weight: int


@dataclass(frozen=True)
class Product:
    sku: str
    category: str
    price: int  # öre
    months: frozenset[int] = frozenset(range(1, 13))


STORES = (
    Store("stockholm-odenplan", "ODP", 30),
    Store("stockholm-sodermalm", "SOD", 25),
    Store("goteborg-haga", "HAG", 18),
    Store("goteborg-linne", "LIN", 12),
    Store("malmo-mollevangen", "MOL", 15),
)
COFFEE = (
    Product("bryggkaffe", "coffee", 3500),
    Product("cappuccino", "coffee", 4200),
    Product("caffe-latte", "coffee", 4500),
    Product("espresso", "coffee", 3200),
    Product("flat-white", "coffee", 4600),
    Product("chai-latte", "tea", 4700),
    Product("te", "tea", 3200),
    Product("iskaffe", "coffee", 4900, frozenset({5, 6, 7, 8})),
)
BAKERY = (
    Product("kanelbulle", "bakery", 3900),
    Product("kardemummabulle", "bakery", 4200),
    Product("chokladboll", "bakery", 2800),
    Product("croissant", "bakery", 3500),
    Product("morotskaka", "bakery", 5200),
    Product("semla", "bakery", 5500, frozenset({1, 2, 3})),
    Product("lussekatt", "bakery", 3400, frozenset({12})),
)
SANDWICHES = (
    Product("ost-skinka", "sandwich", 6900),
    Product("raksmorgas", "sandwich", 11900),
    Product("kycklingsallad", "sandwich", 9900),
    Product("vegansk-wrap", "sandwich", 8900),
)
DRINKS = (Product("juice", "drink", 3900), Product("mineralvatten", "drink", 2500))
WEBSHOP = (
    Product("bonor-mellanrost-500g", "beans", 14900),
    Product("bonor-morkrost-500g", "beans", 15900),
    Product("kaffekopp-mugg", "merchandise", 19900),
)
#: Catalogue rewards a member takes at the till, cheapest first: (reward id, points).
REWARDS = (
    ("bryggkaffe", 350),
    ("kanelbulle", 390),
    ("rabatt-50kr", 500),
    ("fika", 700),
)
#: Now and then a member gives a reward's worth to charity instead.
DONATION, DONATION_SHARE = "plantera-ett-trad", 0.1
#: Gift-card codes "bought" from the provider for the presentkort-200 reward.
GIFT_CODES = [f"KK-PK200-{n:04d}" for n in range(1, 101)]

# fmt: off
FIRST_NAMES = (
    "Anna", "Eva", "Maria", "Karin", "Sara", "Emma", "Elin", "Johanna", "Linnea", "Maja",
    "Ebba", "Wilma", "Alice", "Ella", "Klara", "Frida", "Ida", "Sofia", "Ingrid", "Astrid",
    "Greta", "Saga", "Elsa", "Agnes", "Yasmin", "Erik", "Lars", "Karl", "Anders", "Johan",
    "Per", "Nils", "Mikael", "Oskar", "Lucas", "William", "Hugo", "Elias", "Axel", "Olle",
    "Gustav", "Viktor", "Filip", "Emil", "Isak", "Leo", "Jonas", "Mattias", "Björn", "Amir",
)
LAST_NAMES = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson",
    "Persson", "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson",
    "Bengtsson", "Jönsson", "Lindberg", "Jakobsson", "Magnusson", "Lindström", "Olofsson",
    "Lindqvist", "Lindgren", "Berg", "Axelsson", "Bergström", "Lundberg", "Lundgren",
    "Mattsson", "Berglund", "Fredriksson", "Sandberg", "Forsberg", "Sjöberg", "Wallin",
    "Engström", "Eklund", "Håkansson", "Lundin", "Björk", "Holm", "Nyström", "Söderberg",
    "Åberg", "Öberg", "Ali", "Mohammed", "Yilmaz", "Nguyen", "Korhonen",
)
# fmt: on
#: Reserved example domains: the demo must never send mail to real people.
MAIL_DOMAINS = ("example.com", "example.net", "example.org")
#: Local opening hours and how busy each is.
HOURS = (7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
HOUR_WEIGHTS = (4, 12, 9, 7, 8, 12, 10, 7, 9, 7, 5, 3)
WEB_HOURS = tuple(range(6, 24))
WEEKDAY_WEIGHTS = (0.9, 0.95, 1.0, 1.0, 1.1, 1.25, 1.0)  # Monday .. Sunday


class Persona(NamedTuple):
    """How a kind of member behaves; visit rates are relative (scaled to the purchases asked)."""

    name: str
    visits_per_week: float
    share: float  # of all members
    drift: float  # chance to stop coming at some point
    redeem: float  # chance to take a reward on a visit when one is affordable


PERSONAS = (
    Persona("daily", 4.0, 0.08, 0.05, 0.15),
    Persona("weekly", 1.0, 0.17, 0.15, 0.20),
    Persona("monthly", 0.25, 0.35, 0.30, 0.30),
    Persona("rare", 0.05, 0.40, 0.30, 0.30),
)
REDEEMER_SHARE = 0.5  # the others never spend their bönor (breakage)
ANONYMOUS_SHARE = 0.15
RETURN_SHARE = 0.02
JOB_LIMIT = 1_000_000  # one simulated night's due lots all go in one transaction


@dataclass
class _Person:
    data: MemberIn
    enrolled_at: datetime
    first_day: int  # index into the plan's days of the first day after enrolment
    last_day: int  # the last day the member still comes by
    weight: float  # expected share of purchases
    home: Store
    redeem: float  # chance to spend bönor on a visit when a reward is affordable


@dataclass
class _Sale:
    at: datetime
    person: int | None
    store: Store | None
    channel: SalesChannel
    lines: list[LineIn]
    receipt: str = ""


@dataclass
class _Refund:
    at: datetime
    sale: _Sale
    lines: list[LineIn]  # empty: the whole purchase


@dataclass(order=True)
class _Event:
    at: datetime
    seq: int
    what: _Person | _Sale | _Refund = field(compare=False)
    person: int = field(default=-1, compare=False)


@dataclass
class DemoStats:
    """What a generation did."""

    members: int = 0
    purchases: int = 0
    returns: int = 0
    spends: int = 0
    vested: int = 0
    expired: int = 0


def ensure_demo(
    db: Database,
    *,
    members: int,
    purchases: int,
    console: Console,
    program_key: str = PROGRAM_KEY,
) -> dict[str, str]:
    """Generate the demo program unless it exists, then return fresh API keys by scope.

    Keys are created on every call (named `demo-<scope>`) because secrets are shown once.
    """
    with db.read() as conn:
        exists = _find_program(conn, program_key) is not None
    if exists:
        console.print(f"Program '{program_key}' exists already; use --fresh to generate it again.")
    else:
        began = time.perf_counter()
        stats = generate(
            db, members=members, purchases=purchases, console=console, program_key=program_key
        )
        console.print(
            f"Generated {stats.members} members, {stats.purchases} purchases, "
            f"{stats.returns} returns, {stats.spends} reward redemptions; vested {stats.vested} "
            f"and expired {stats.expired} lots in {time.perf_counter() - began:.1f} s."
        )
    now = SystemClock().now()
    keys: dict[str, str] = {}
    with db.write() as conn:
        program = programs.by_key(conn, program_key)
        for scope in (Scope.admin, Scope.pos, Scope.read):
            token, _ = access.create_key(conn, program.program_id, scope, f"demo-{scope}", now)
            keys[scope.value] = token
    return keys


def generate(
    db: Database, *, members: int, purchases: int, console: Console, program_key: str
) -> DemoStats:
    """Apply the program and play the planned 18 months through the services."""
    rng = random.Random(SEED)
    people, events = _plan(rng, members, purchases)
    document = parse_document(PROGRAM_DOCUMENT).model_dump()
    spec = ProgramSpec.model_validate({**document, "key": program_key})
    with db.write() as conn:
        program = programs.apply(conn, spec, START)
        rewards.import_codes(conn, program.program_id, "presentkort-200", GIFT_CODES, START)
    stats = DemoStats()
    play_rng = random.Random(rng.getrandbits(64))  # loyalty numbers and reward choices
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Kaffekoppen, 18 months", total=len(events))
        _play(db, program, people, events, play_rng, stats, lambda n: progress.advance(task, n))
    return stats


def _find_program(conn: Connection, key: str) -> ProgramVersion | None:
    try:
        return programs.by_key(conn, key)
    except Problem as exc:
        if exc.status == 404:
            return None
        raise


# Planning: pure, all randomness from one rng, no database.


def _plan(rng: random.Random, members: int, purchases: int) -> tuple[list[_Person], list[_Event]]:
    """People, sales and returns over the 18 months, as events in time order."""
    first = _local_date(START) + timedelta(days=1)
    days = [first + timedelta(days=n) for n in range((_local_date(NOW) - first).days)]
    people = _people(rng, members, days)
    at_till = [i for i, p in enumerate(people) if p.data.channel == Channel.store]
    sales = [_enrolment_sale(rng, i, people[i]) for i in at_till]
    member_sales = max(0, round(purchases * (1 - ANONYMOUS_SHARE)) - len(sales))
    sales += _member_sales(rng, people, days, member_sales)
    sales += [_anonymous_sale(rng, days) for _ in range(max(0, purchases - len(sales)))]
    refunds = _refunds(rng, sales, days[-1])
    events = [_Event(p.enrolled_at, 0, p, i) for i, p in enumerate(people)]
    events += [_Event(s.at, 0, s) for s in sales]
    events += [_Event(r.at, 0, r) for r in refunds]
    for seq, event in enumerate(events):
        event.seq = seq
    events.sort()
    _number_receipts(sales)
    return people, events


def _people(rng: random.Random, count: int, days: list[date]) -> list[_Person]:
    people: list[_Person] = []
    emails: set[str] = set()
    phones: set[str] = set()
    launch = max(1, count // 5)  # a fifth join in the launch fortnight
    for n in range(count):
        day = rng.randrange(14) if n < launch else rng.randrange(len(days))
        persona = rng.choices(PERSONAS, weights=[p.share for p in PERSONAS])[0]
        channel = rng.choices((Channel.store, Channel.app, Channel.online), (60, 30, 10))[0]
        first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email: str | None = _unique(emails, rng, _email(rng, first_name, last_name))
        phone: str | None = _unique(phones, rng, f"+4670{rng.randrange(10**7):07d}")
        if rng.random() < 0.15:
            phone = None
        elif rng.random() < 0.1:
            email = None
        age = rng.choice((rng.randint(18, 35), rng.randint(18, 80)))
        birth = date(2026 - age, 1, 1) + timedelta(days=rng.randrange(365))
        hours = HOURS if channel == Channel.store else WEB_HOURS
        enrolled_at = _local_time(rng, days[day], hours)
        last_day = len(days) - 1
        if rng.random() < persona.drift:
            last_day = rng.randint(day, last_day)
        active_weeks = max(0, last_day - day) / 7
        people.append(
            _Person(
                data=MemberIn(
                    email=email,
                    phone=phone,
                    first_name=first_name,
                    last_name=last_name,
                    birth_date=birth if rng.random() < 0.8 else None,
                    locale="sv" if rng.random() < 0.85 else "en",
                    marketing_consent=rng.random() < 0.55,
                    channel=channel,
                ),
                enrolled_at=enrolled_at,
                first_day=min(day + 1, len(days) - 1),
                last_day=last_day,
                weight=persona.visits_per_week * active_weeks * rng.uniform(0.5, 1.5),
                home=rng.choices(STORES, [s.weight for s in STORES])[0],
                redeem=persona.redeem if rng.random() < REDEEMER_SHARE else 0.0,
            )
        )
    return people


def _member_sales(
    rng: random.Random, people: list[_Person], days: list[date], count: int
) -> list[_Sale]:
    """`count` sales spread over members in proportion to how often each comes by."""
    if not people or count == 0:
        return []
    cumulative = list(accumulate(p.weight for p in people))
    if cumulative[-1] <= 0:
        return []
    sales = []
    for _ in range(count):
        index = min(bisect_right(cumulative, rng.random() * cumulative[-1]), len(people) - 1)
        person = people[index]
        day = _pick_day(rng, days, person.first_day, max(person.first_day, person.last_day))
        if person.data.channel == Channel.online and rng.random() < 0.15:
            sales.append(_sale(rng, day, index, None, SalesChannel.online))
            continue
        channel = SalesChannel.store
        if person.data.channel == Channel.app and rng.random() < 0.4:
            channel = SalesChannel.app
        store = person.home if rng.random() < 0.8 else _any_store(rng)
        sales.append(_sale(rng, day, index, store, channel))
    return sales


def _enrolment_sale(rng: random.Random, index: int, person: _Person) -> _Sale:
    """Joined at the till: the first purchase rings up right after."""
    at = person.enrolled_at + timedelta(minutes=rng.randint(1, 4))
    return _Sale(at, index, person.home, SalesChannel.store, _basket(rng, at, online=False))


def _anonymous_sale(rng: random.Random, days: list[date]) -> _Sale:
    day = _pick_day(rng, days, 0, len(days) - 1)
    return _sale(rng, day, None, _any_store(rng), SalesChannel.store)


def _sale(
    rng: random.Random, day: date, person: int | None, store: Store | None, channel: SalesChannel
) -> _Sale:
    at = _local_time(rng, day, HOURS if store else WEB_HOURS)
    return _Sale(at, person, store, channel, _basket(rng, at, online=store is None))


def _basket(rng: random.Random, at: datetime, *, online: bool) -> list[LineIn]:
    """A café order (or a web-shop order of beans and mugs), one line per product."""
    local = at.astimezone(ZONE)
    month = local.month
    if online:
        picks = [rng.choice(WEBSHOP) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    else:
        picks = []
        if rng.random() < 0.85:
            picks.append(_seasonal(rng, COFFEE, month))
        if rng.random() < 0.45:
            picks.append(_seasonal(rng, BAKERY, month))
        if rng.random() < (0.45 if 11 <= local.hour <= 13 else 0.06):
            picks.append(rng.choice(SANDWICHES))
        if rng.random() < 0.1 or not picks:
            picks.append(rng.choice(DRINKS))
    quantities: dict[Product, int] = {}
    extra = 2 if rng.random() < 0.12 else 1  # a friend's order on the same receipt
    for product in picks:
        quantities[product] = quantities.get(product, 0) + extra
    return [
        LineIn(sku=p.sku, category=p.category, quantity=q, amount=p.price * q)
        for p, q in quantities.items()
    ]


def _seasonal(rng: random.Random, products: tuple[Product, ...], month: int) -> Product:
    return rng.choice([p for p in products if month in p.months])


def _refunds(rng: random.Random, sales: list[_Sale], last_day: date) -> list[_Refund]:
    """About 2% of sales come back, whole or one unit of one line, within a month."""
    end = _local_time_at(last_day, 19, 0)
    refunds = []
    for sale in rng.sample(sales, min(len(sales), round(len(sales) * RETURN_SHARE))):
        delay = rng.choice((0, 0, 1, 1, 2, 3, 5, 7, 10, 14, 16, 21, 28))
        if delay == 0:
            at = sale.at + timedelta(minutes=rng.randint(10, 180))
        else:
            at = _local_time(rng, _local_date(sale.at) + timedelta(days=delay))
        if at >= end:
            continue
        units = sum(line.quantity for line in sale.lines)
        lines: list[LineIn] = []
        if units > 1 and rng.random() < 0.5:
            line = rng.choice(sale.lines)
            unit = line.amount // line.quantity
            lines = [LineIn(sku=line.sku, category=line.category, quantity=1, amount=unit)]
        refunds.append(_Refund(at, sale, lines))
    return refunds


def _number_receipts(sales: list[_Sale]) -> None:
    """Receipt numbers per store and local day, in time order: ODP-250502-0007."""
    counters: dict[tuple[str, date], int] = {}
    for sale in sorted(sales, key=lambda s: s.at):
        prefix = sale.store.receipt_prefix if sale.store else "WEB"
        day = sale.at.astimezone(ZONE).date()
        counters[prefix, day] = counters.get((prefix, day), 0) + 1
        sale.receipt = f"{prefix}-{day:%y%m%d}-{counters[prefix, day]:04d}"


def _pick_day(rng: random.Random, days: list[date], lo: int, hi: int) -> date:
    """A day in days[lo..hi], Fridays and Saturdays a little busier."""
    top = max(WEEKDAY_WEIGHTS)
    while True:
        day = days[rng.randint(lo, hi)]
        if rng.random() * top < WEEKDAY_WEIGHTS[day.weekday()]:
            return day


def _any_store(rng: random.Random) -> Store:
    return rng.choices(STORES, [s.weight for s in STORES])[0]


def _local_time(rng: random.Random, day: date, hours: tuple[int, ...] = HOURS) -> datetime:
    """A moment on `day` in the program's zone, as UTC; café hours follow the rush profile."""
    hour = rng.choices(hours, HOUR_WEIGHTS if hours == HOURS else None)[0]
    return _local_time_at(day, hour, rng.randrange(60))


def _local_time_at(day: date, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).astimezone(UTC)


def _local_date(at: datetime) -> date:
    return at.astimezone(ZONE).date()


def _email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice((f"{first}.{last}", f"{first}{last[0]}", f"{first[0]}{last}"))
    return f"{_ascii(local)}@{rng.choice(MAIL_DOMAINS)}"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _unique(taken: set[str], rng: random.Random, value: str) -> str:
    """`value`, or a variant with digits (before any @) that nobody has yet."""
    candidate = value
    while candidate in taken:
        name, at, domain = value.partition("@")
        if at:
            candidate = f"{name}{rng.randint(1, 999)}@{domain}"
        else:
            candidate = f"{name[:-7]}{rng.randrange(10**7):07d}"
    taken.add(candidate)
    return candidate


# Playing the plan through the services.


def _play(
    db: Database,
    program: ProgramVersion,
    people: list[_Person],
    events: list[_Event],
    rng: random.Random,
    stats: DemoStats,
    advance: Callable[[int], None],
) -> None:
    """One transaction per simulated day: the night's jobs first, then the day's events."""
    clock = FixedClock(START)
    player = _Player(program, people, rng, stats)
    for day, batch in groupby(events, key=lambda e: _local_date(e.at)):
        day_events = list(batch)
        clock.set(_local_time_at(day, 3, 0))
        with db.write() as conn:
            _run_jobs(conn, program, clock.now(), stats)
            for event in day_events:
                clock.set(event.at)
                player.apply(conn, event, clock.now())
            player.flush(conn, clock.now())
        advance(len(day_events))
    clock.set(NOW)
    with db.write() as conn:
        _run_jobs(conn, program, clock.now(), stats)


class _Player:
    """Turns planned events into service calls; runs of purchases go in one batch ingest."""

    def __init__(
        self, program: ProgramVersion, people: list[_Person], rng: random.Random, stats: DemoStats
    ) -> None:
        self.program, self.people, self.rng, self.stats = program, people, rng, stats
        self.members: dict[int, tuple[int, int]] = {}  # person -> (member id, account id)
        self.till: list[PurchaseIn | ReturnIn | EventIn | Problem] = []

    def apply(self, conn: Connection, event: _Event, now: datetime) -> None:
        what = event.what
        if isinstance(what, _Person):
            self._enrol(conn, event.person, what, now)
        elif isinstance(what, _Sale):
            self._sale(conn, what, now)
        else:
            self.flush(conn, now)  # the purchase may still be in the batch
            refund = ReturnIn(
                type="return",
                external_id=f"{what.sale.receipt}-R",
                original_external_id=what.sale.receipt,
                occurred_at=what.at,
                lines=what.lines,
            )
            activities.ingest(conn, self.program, refund, now, ACTOR)
            self.stats.returns += 1

    def flush(self, conn: Connection, now: datetime) -> None:
        """Ingest the purchases rung up so far, received `now`; any rejection is a bug."""
        if not self.till:
            return
        results = activities.ingest_many(conn, self.program, self.till, now, ACTOR)
        rejected = [r for r in results if isinstance(r, Problem)]
        if rejected:
            raise rejected[0]
        self.stats.purchases += len(self.till)
        self.till = []

    def _enrol(self, conn: Connection, person: int, plan: _Person, now: datetime) -> None:
        member = member_service.enrol(conn, self.program, plan.data, now, rng=self.rng)
        row = member_service.resolve_with_account(
            conn, self.program.program_id, member_id=member.id
        )
        self.members[person] = (member.id, int(row.account_id))
        self.stats.members += 1

    def _sale(self, conn: Connection, sale: _Sale, now: datetime) -> None:
        member_id = None
        if sale.person is not None:
            member_id, account_id = self.members[sale.person]
            self._maybe_spend(conn, self.people[sale.person], member_id, account_id, sale, now)
        self.till.append(
            PurchaseIn(
                type="purchase",
                external_id=sale.receipt,
                member_id=member_id,
                occurred_at=sale.at,
                amount=sum(line.amount for line in sale.lines),
                currency=self.program.spec.currency,
                store=sale.store.code if sale.store else None,
                channel=sale.channel,
                lines=sale.lines,
            )
        )

    def _maybe_spend(
        self,
        conn: Connection,
        person: _Person,
        member_id: int,
        account_id: int,
        sale: _Sale,
        now: datetime,
    ) -> None:
        """At the till, a member who can afford a reward sometimes takes one.

        Purchases still in the batch cannot change what is available: with 14 vesting
        days their points are pending, so the balance read here is the true one.
        """
        if person.redeem == 0:
            return
        counters = ledger.lock_account(conn, self.program.program_id, account_id)
        available = ledger.Balance.of(counters).available
        affordable = [r for r in REWARDS if r[1] <= available]
        if not affordable or self.rng.random() >= person.redeem:
            return
        best = self.rng.random() < 0.8
        reward, _ = affordable[-1] if best else self.rng.choice(affordable)
        if self.rng.random() < DONATION_SHARE:
            reward = DONATION
        member = member_service.resolve_with_account(
            conn, self.program.program_id, member_id=member_id
        )
        voucher = rewards.redeem(
            conn, self.program, member, reward, f"{sale.receipt}-{reward}", None, now, ACTOR
        )
        if voucher.status == "issued":  # a donation is done at once; the rest used right away
            rewards.consume(conn, self.program, voucher.code, sale.receipt, None, now)
        self.stats.spends += 1


def _run_jobs(conn: Connection, program: ProgramVersion, now: datetime, stats: DemoStats) -> None:
    """The night's vesting, expiry and voucher expiry for this program only (what
    `worker.jobs` does for all)."""
    ctx = ledger.Context(program.program_id, now, "job")
    due = ledger_reads.due_for_vesting(conn, program.program_id, now, JOB_LIMIT)
    stats.vested += ledger.vest_many(conn, ctx, due)
    for lot_id in ledger_reads.due_for_expiry(conn, program.program_id, now, JOB_LIMIT):
        stats.expired += ledger.post(conn, ctx, ledger.Expire(lot_id)) is not None
    rewards.expire_vouchers(conn, program.program_id, now)
