"""The layer under the table tools: `runs` runs a table's runs, `folder` reads them, `table`
writes the table, `cli` holds the shared options, `protocols` the clean and paper ones."""
