"""Image effects: pure functions with declared parameter schemas (the effects issue fills this in)."""
