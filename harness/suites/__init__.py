"""Suite definitions shipped with the harness (TOML files; see docs/suites.md)."""
