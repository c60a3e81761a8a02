"""Background jobs: vesting and expiry, run in-process by `trofast serve` or by `trofast worker`."""
