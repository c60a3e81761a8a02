"""Analytics over the same tables: KPIs, simulation of rule changes over history."""
