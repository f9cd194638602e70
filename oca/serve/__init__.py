"""The data plane: sockets, sendfile, workers and the master that runs them."""
