"""API keys and scopes: who may do what in which program."""
