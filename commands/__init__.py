"""The `cxdi` command line: one module per subcommand, installed as `cxdi_cli.commands`."""
