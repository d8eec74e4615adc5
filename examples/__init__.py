"""Programs that use the library as a user would: `make demo` runs `examples.demo`."""
