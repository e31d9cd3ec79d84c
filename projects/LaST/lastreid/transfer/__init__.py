"""The transfer table (docs/generalisation.md): `sources` its rows, `matrix` its cells as runs."""
