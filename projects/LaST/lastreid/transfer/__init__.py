"""The transfer table (docs/generalisation.md; `tools/transfer_matrix.py`): `sources`, the
rows; `matrix`, the cells as runs; `report`, the table."""
