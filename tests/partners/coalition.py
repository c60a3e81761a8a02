"""A coalition program's partners and rewards, shared by the partner tests."""

from typing import Any

PARTNERS: list[dict[str, Any]] = [
    {
        "id": "hotel",
        "name": "Hotell Nord",
        "earn": {"points": 1, "per_amount": 1000},
        "point_price": 50,
        "redemption_price": 40,
    },
    {"id": "cinema", "name": "Bio Syd", "earn": {"points": 2, "per_amount": 1000}},
]
REWARDS: list[dict[str, Any]] = [
    {"id": "hotel-night", "type": "custom", "name": "A night", "cost": 300, "partner": "hotel"},
    {
        "id": "cinema-off",
        "type": "discount",
        "name": "50 off",
        "cost": 20,
        "amount": 5000,
        "partner": "cinema",
    },
    {"id": "coffee", "type": "free_product", "name": "Coffee", "cost": 10, "sku": "KAFFE"},
]
