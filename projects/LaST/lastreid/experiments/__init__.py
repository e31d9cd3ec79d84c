"""The experiment layer under the table tools (transfer, joint, benchmark): `runs` (RunSpec,
Runner.execute / settle: one resumable train_net.py process per run, --stale), `folder`
(what a run folder says), `table` (markdown, CSV, chart, atomically), `cli` (the shared
options), `protocols` (clean / paper). To declare a new table (e.g. clothes-changing):
1. a module with a dataclass holding `output`, `opts` and a `runner: Runner`;
2. one method building a RunSpec per run (title, config, opts, output folder under
   `output`, eval_only, and a stamp such as a checkpoint's weights_signature if it has one);
3. `run()`: `runner.settle([(spec, [paths to remove to redo it]), ...], output)`, then per
   spec `runner.execute(spec, counter, read)`, `read(results.json dict)` returning the
   row's numbers (from results.json, or folder.best_epoch / training_speed ...) or None;
4. write the table with `table.write_tables(output, stem, markdown, csv rows, draw)`;
5. a tools/<name>.py of ~50 lines: argparse + cli.add_table_options, parse_table_args,
   runner_of, then the declaration's run() and cli.print_table."""
