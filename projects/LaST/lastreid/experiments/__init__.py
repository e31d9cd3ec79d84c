"""The layer under the table tools: `runs` (RunSpec, Runner: --stale, one resumable
train_net.py per run), `folder` (what a run folder says), `table` (markdown, CSV, chart),
`cli` (the shared options), `protocols` (clean / paper). A table declares its RunSpecs,
`runner.settle`s them, `runner.execute`s each and writes with `table.write_tables`."""
