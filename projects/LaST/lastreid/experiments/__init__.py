"""The layer under the table tools: a table declares its `runs.RunSpec`s, a `runs.Runner` settles
and executes them, `folder` reads the run folders, `table` writes markdown, CSV and chart."""
