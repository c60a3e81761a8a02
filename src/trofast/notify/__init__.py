"""The outbox: side effects (webhooks, e-mail, in-portal messages) written in the same
transaction as the change that causes them (DESIGN rule 9)."""
