"""The rules engine: a pure function from (program, activity, member, clock) to effects."""
