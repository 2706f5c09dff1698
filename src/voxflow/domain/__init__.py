"""Pure domain values: no I/O, no database, the clock passed in."""
