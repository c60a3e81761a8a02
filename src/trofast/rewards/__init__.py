"""Rewards catalogue, vouchers, gift-card code pools and pay-with-points."""
