"""The box's admin port: status, metrics, inventory, purge, import, drain."""
