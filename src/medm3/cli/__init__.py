"""The `m3` command line interface: one module per subcommand, loaded lazily."""
