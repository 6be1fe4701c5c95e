"""The calculation domain: calculator-style tools over a seeded world of rates, taxes, duties and units."""
