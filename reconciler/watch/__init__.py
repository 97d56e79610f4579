"""`reconciler watch`: follow a spec (file or directory) and repair drift, as a long-running daemon."""
