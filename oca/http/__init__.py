"""Pure HTTP semantics for the data plane: Range, preconditions, media types and CMCD; no I/O here."""
