"""The transfer table (docs/generalisation.md; `tools/transfer_matrix.py`): pre-trained
models x {PRCC, Celeb-reID, Market-1501, DukeMTMC-reID} x {direct, fine-tuned}, under the
clean and the paper protocol, declared on lastreid.experiments. `sources`: the rows;
`matrix`: the cells as runs; `report`: the table."""
