"""`request_hash` must never change: stored activities and Idempotency-Keys are compared
with hashes written by earlier versions."""

import hashlib
import json
from datetime import UTC, datetime

from trofast.kit.idempotency import request_hash


def test_request_hash_is_sorted_compact_json_hashed() -> None:
    body = {
        "type": "purchase",
        "external_id": "Kvitto 1 ☕",
        "member_id": 7,
        "amount": 4950,
        "lines": [{"sku": "latte", "quantity": 1}],
        "at": datetime(2026, 1, 15, tzinfo=UTC),
    }
    blob = json.dumps(("activity", body), sort_keys=True, separators=(",", ":"), default=str)
    assert request_hash("activity", body) == hashlib.sha256(blob.encode()).hexdigest()
    # Pinned: the hash of this request as every earlier version computed it.
    pinned = "29eaba5e5ee0420bbc1901c34e042026abd091423367da915bc5d326930311b9"
    assert request_hash({"b": 1, "a": [1, "x"]}) == pinned
