"""The airline domain: tau-bench's airline (users, flights, reservations) and its 14 tools."""
