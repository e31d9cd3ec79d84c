"""The layer under the table tools: `runs`, `folder` (run files), `table`, `cli`, `protocols`."""
