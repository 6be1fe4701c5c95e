"""The retail domain: tau-bench's online shop (users, orders, products) and its 16 tools."""
