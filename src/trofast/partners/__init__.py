"""Partners and coalition programs: partner keys, partner earning, partner vouchers and
the monthly settlement between the program and each partner."""
